"""The ``sdrt`` command line."""
from __future__ import annotations

import argparse
import json
import sys


def _cmd_info(args: argparse.Namespace) -> int:
    from .info import collect_info, format_info

    info = collect_info()
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def _output_paths(out: str, count: int) -> list[str]:
    if count == 1:
        return [out]
    stem, dot, ext = out.rpartition(".")
    stem, ext = (stem, ext) if dot else (out, "png")
    return [f"{stem}-{i:02d}.{ext}" for i in range(count)]


def _cmd_txt2img(args: argparse.Namespace) -> int:
    import os

    from . import load
    from .pipelines.png import save_png

    out_dir = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(out_dir):
        print(f"sdrt txt2img: output folder {out_dir} does not exist", file=sys.stderr)
        return 2
    pipe = load(args.model, device=args.device)
    total = args.steps * args.n_iter

    def progress(info: dict) -> None:
        done = info["i"] + 1
        bar = "#" * (30 * done // args.steps)
        print(f"\rsampling [{bar:<30}] {done}/{args.steps}", end="", file=sys.stderr, flush=True)

    result = pipe.txt2img(args.prompt, args.negative_prompt, steps=args.steps, sampler_name=args.sampler,
                          scheduler=args.scheduler, cfg_scale=args.cfg_scale, width=args.width, height=args.height,
                          seed=args.seed, batch_size=args.batch_size, n_iter=args.n_iter, clip_skip=args.clip_skip,
                          callback=None if args.quiet else progress)
    if not args.quiet and total:
        print(file=sys.stderr)
    paths = _output_paths(args.output, len(result.images))
    for path, image, infotext, seed in zip(paths, result.images, result.infotexts, result.seeds):
        save_png(image, path, infotext)
        print(f"wrote {path} (seed {seed})")
    return 0


def _cmd_png_info(args: argparse.Namespace) -> int:
    import os

    from .pipelines.infotext import parse_infotext
    from .pipelines.png import read_parameters

    if not os.path.isfile(args.image):
        raise FileNotFoundError(f"{args.image}: no such file")
    text = read_parameters(args.image)
    if text is None:
        print(f"sdrt png-info: {args.image} has no generation parameters", file=sys.stderr)
        return 1
    print(json.dumps(parse_infotext(text), indent=2, ensure_ascii=False) if args.json else text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="sdrt", description="sdrt: an optimized Stable Diffusion runtime.")
    parser.add_argument("--version", action="version", version=f"sdrt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser("info", help="version, compiled extension, backends and devices")
    info.add_argument("--json", action="store_true", help="print the facts as JSON")
    info.set_defaults(func=_cmd_info)

    t2i = sub.add_parser("txt2img", help="generate images from a prompt")
    t2i.add_argument("prompt")
    t2i.add_argument("-o", "--output", default="txt2img.png", help="PNG path (numbered when several images)")
    t2i.add_argument("-n", "--negative-prompt", default="")
    t2i.add_argument("--model", default="toy", help="'toy' (bundled) or a diffusers folder")
    t2i.add_argument("--device", default="cpu")
    t2i.add_argument("--steps", type=int, default=20)
    t2i.add_argument("--sampler", default="Euler a", help="A1111 sampler name, e.g. 'Euler a', 'DPM++ 2M'")
    t2i.add_argument("--scheduler", default="Automatic")
    t2i.add_argument("--cfg-scale", type=float, default=7.0)
    t2i.add_argument("--width", type=int, default=None, help="default: the model's native size")
    t2i.add_argument("--height", type=int, default=None)
    t2i.add_argument("--seed", type=int, default=-1)
    t2i.add_argument("--batch-size", type=int, default=1)
    t2i.add_argument("--n-iter", type=int, default=1)
    t2i.add_argument("--clip-skip", type=int, default=1)
    t2i.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    t2i.set_defaults(func=_cmd_txt2img)

    info_png = sub.add_parser("png-info", help="print the generation parameters stored in an image")
    info_png.add_argument("image")
    info_png.add_argument("--json", action="store_true", help="print them parsed, as JSON")
    info_png.set_defaults(func=_cmd_png_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:  # bad input: one clear line, no traceback
        print(f"sdrt {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
