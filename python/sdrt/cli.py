"""The ``sdrt`` command line."""
from __future__ import annotations

import argparse
import json
import sys

from .backends.compiled_unet import COMPILE_MODES
from .loading import BACKENDS, DTYPE_NAMES


def _cmd_info(args: argparse.Namespace) -> int:
    from .info import collect_info, format_info

    info = collect_info()
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from .cli_generation import run_generation

    return run_generation(args)


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


def _parse_loras(items) -> list[tuple[str, float]]:
    loras = []
    for item in items or []:
        name, _, weight = item.rpartition(":")
        try:
            loras.append((name, float(weight)) if name else (item, 1.0))
        except ValueError:
            raise ValueError(f"--lora {item}: expected NAME_OR_PATH[:WEIGHT]") from None
    return loras


def _cmd_export(args: argparse.Namespace) -> int:
    import time

    from . import load

    if args.to == "tensorrt":
        raise ValueError("--to tensorrt: engine building is not wired into the CLI yet (TensorRT cannot be "
                         "installed on this project's machines); export --to onnx and build with "
                         "sdrt.export.to_tensorrt(onnx_dir, out_dir) where TensorRT is installed")
    if args.openvino_ir and args.to != "onnx":
        raise ValueError(f"--openvino-ir: an option of --to onnx (got --to {args.to})")
    started = time.perf_counter()
    loras = _parse_loras(args.lora)
    pipe = load(args.model, models_dir=args.models_dir)  # LoRA names are looked up in its model folders

    def say(message: str) -> None:
        print(message, file=sys.stderr)

    if args.to == "coreml":
        from .export import to_coreml

        manifest = to_coreml(pipe, args.output, size=args.size, attention=args.attention,
                             palettize_bits=args.palettize, loras=loras, progress=say, in_place=True,
                             controlnets=args.controlnet or ())
        files = [c["file"] for c in (*manifest["components"].values(), *manifest.get("controlnets", {}).values())]
        print(f"wrote {args.output}: {', '.join(files)} "
              f"({args.attention} attention) in {time.perf_counter() - started:.1f} s; running them needs macOS")
        return 0
    from .export import to_onnx

    manifest = to_onnx(pipe, args.output, fp16=args.fp16, loras=loras, progress=say, in_place=True,
                       controlnets=args.controlnet or (), openvino_ir=args.openvino_ir)
    graphs = [*manifest["components"].values(), *manifest.get("controlnets", {}).values()]
    total = sum(c["bytes"] for c in graphs) / 2**20
    worst = max(c["parity_max_abs_error"] for c in graphs)
    names = [*manifest["components"], *(f"controlnets/{k}" for k in manifest.get("controlnets", {}))]
    print(f"wrote {args.output}: {', '.join(names)} ({manifest['precision']}, {total:.1f} MiB, "
          f"ORT vs torch max |error| {worst:.1e}) in {time.perf_counter() - started:.1f} s; "
          f"run it with --backend {'openvino' if args.openvino_ir else 'onnxruntime'} --model {args.output}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    """A model (folder, checkpoint, name) -> one A1111-loadable .safetensors, LoRAs merged in."""
    import os
    import time

    import torch

    from . import load

    if not args.output.endswith(".safetensors"):
        raise ValueError(f"--output {args.output}: must end in .safetensors")
    started = time.perf_counter()
    pipe = load(args.model, vae=args.vae, models_dir=args.models_dir)
    loras = _parse_loras(args.lora)
    merged = pipe.networks.merge(loras) if loras else []
    pipe.save_single_file(args.output, dtype=torch.float32 if args.fp32 else torch.float16)
    size = os.path.getsize(args.output) / 2**20
    print(f"wrote {args.output} ({size:.1f} MiB, {'fp32' if args.fp32 else 'fp16'}"
          f"{', merged ' + ', '.join(merged) if merged else ''}) in {time.perf_counter() - started:.1f} s")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .benchmark import Config, benchmark, format_sweep_table, format_table, parse_sweep, sweep, write_json

    if args.repeats < 1 or args.warmup < 0:
        raise ValueError(f"--repeats {args.repeats} / --warmup {args.warmup}: need repeats >= 1, warmup >= 0")
    config = Config(model=args.model, backend=args.backend, device=args.device, dtype=args.dtype,
                    attention=args.attention, compile=args.compile,
                    sampler_loop=args.sampler_loop,
                    size=args.size, batch=args.batch_size, steps=args.steps, sampler=args.sampler,
                    cfg_scale=args.cfg_scale)
    compare = config.overridden(args.compare) if args.compare else None
    if args.sweep:
        key, values = parse_sweep(args.sweep, config)
        result = sweep(config, key, values, compare=compare, warmup=args.warmup, repeats=args.repeats)
        print(format_sweep_table(result))
    else:
        result = benchmark(config, compare=compare, warmup=args.warmup, repeats=args.repeats)
        print(format_table(result))
    if args.plot:
        from .bench_plot import plot

        plot(result, args.plot)
        print(f"wrote {args.plot}")
    if args.json:
        write_json(result, args.json)
        print(f"wrote {args.json}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        from .server import Limits, ServerConfig
        from .server.auth import parse_credentials
        from .server.serve import check_exposure, serve
    except ImportError as e:
        raise ValueError(f"sdrt serve needs the server extra ({e.name} is missing): pip install 'sdrt[server]'") from None

    host = "0.0.0.0" if args.listen and args.host == "127.0.0.1" else args.host
    credentials = parse_credentials(args.api_auth) if args.api_auth else []
    check_exposure(host, bool(credentials), args.insecure_no_auth)
    limits = Limits(max_side=args.max_side, max_steps=args.max_steps, max_batch_size=args.max_batch_size,
                    max_n_iter=args.max_n_iter)
    from .server.admission import LOOPBACK_NAMES
    from .server.models import ModelManager
    from .server.serve import is_loopback

    folders = None
    if args.models_dir:
        from .loaders.model_folders import ModelFolders

        folders = ModelFolders(args.models_dir)
    ModelManager(folders).resolve_checkpoint(args.model, "--model")  # a bad name stops here, not at the first job
    config = ServerConfig(model=args.model, models_dir=args.models_dir, device=args.device, attention=args.attention,
                          credentials=credentials, limits=limits, max_queue=args.queue_size,
                          load_kwargs={"compile": args.compile} if args.compile != "off" else {},
                          allowed_hosts=list(LOOPBACK_NAMES) if not credentials and is_loopback(host) else [])
    return serve(config, host, args.port, log_level=args.log_level)


def _cmd_models(args: argparse.Namespace) -> int:
    from .loading import model_folders
    from .loaders.model_folders import KINDS

    folders = model_folders(args.models_dir)
    if folders is None:
        raise ValueError("no model folder: pass --models-dir or set SDRT_MODELS_ROOT")
    kinds = [args.kind] if args.kind else list(KINDS)
    listing = {kind: [{"name": e.name, "title": e.title, "path": e.path, "size": e.size} for e in folders.list(kind)]
               for kind in kinds}
    if args.json:
        print(json.dumps(listing, indent=2))
        return 0
    for kind, entries in listing.items():
        print(f"{kind} ({folders.folder(kind)}): {len(entries)}")
        for e in entries:
            print(f"  {e['title']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="sdrt", description="sdrt: an optimized Stable Diffusion runtime.")
    parser.add_argument("--version", action="version", version=f"sdrt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_info_parser, _add_generation_parsers, _add_convert_parser, _add_export_parser, _add_bench_parser,
                _add_serve_parser, _add_models_parser, _add_png_info_parser, _add_upscale_parser):
        add(sub)
    return parser


def _add_info_parser(sub) -> None:
    info = sub.add_parser("info", help="version, compiled extension, backends and devices")
    info.add_argument("--json", action="store_true", help="print the facts as JSON")
    info.set_defaults(func=_cmd_info)


def _add_generation_parsers(sub) -> None:
    from .cli_generation import add_generation_arguments

    t2i = sub.add_parser("txt2img", help="generate images from a prompt")
    add_generation_arguments(t2i, "txt2img.png", img2img=False)
    t2i.set_defaults(func=_cmd_generate)
    i2i = sub.add_parser("img2img", help="redraw an image from a prompt (inpaint with --mask)")
    add_generation_arguments(i2i, "img2img.png", img2img=True)
    i2i.set_defaults(func=_cmd_generate)


def _add_upscale_parser(sub) -> None:
    up = sub.add_parser("upscale", help="upscale an image as A1111's Extras tab does")
    up.add_argument("image")
    up.add_argument("-o", "--output", default="upscaled.png", help="PNG path")
    up.add_argument("--upscaler", default="Lanczos", help="'Lanczos', 'Nearest', 'ToyESRGAN_2x', a file name in "
                    "models/ESRGAN or an 'R-ESRGAN ...' label (see `sdrt upscale --list`)")
    up.add_argument("--scale", type=float, default=2.0, help="upscale by this factor (1-8)")
    up.add_argument("--width", type=int, default=None, help="upscale to this size instead (with --height)")
    up.add_argument("--height", type=int, default=None)
    up.add_argument("--no-crop", action="store_true", help="with --width/--height: keep the aspect, do not crop")
    up.add_argument("--upscaler-2", default="None", help="a second upscaler blended in")
    up.add_argument("--upscaler-2-visibility", type=float, default=0.0)
    up.add_argument("--tile", type=int, default=192, help="model upscalers: tile size in pixels (0: whole image)")
    up.add_argument("--tile-overlap", type=int, default=8)
    up.add_argument("--device", default="cpu")
    up.add_argument("--models-dir", default=None, help="default: $SDRT_MODELS_ROOT")
    up.add_argument("--list", action="store_true", help="list the upscalers and exit")
    up.set_defaults(func=_cmd_upscale)


def _cmd_upscale(args: argparse.Namespace) -> int:
    from .cli_generation import open_image
    from .loading import model_folders
    from .pipelines.png import save_png
    from .postprocess.extras import ExtrasParams, run_extras
    from .postprocess.upscalers import Upscalers

    upscalers = Upscalers(model_folders(args.models_dir), tile=args.tile, overlap=args.tile_overlap, device=args.device)
    if args.list:
        for entry in upscalers.entries():
            print(entry.name if entry.path is None else f"{entry.name}  ({entry.path})")
        return 0
    if (args.width is None) != (args.height is None):
        raise ValueError("--width and --height go together")
    to = args.width is not None
    params = ExtrasParams(resize_mode=int(to), upscaling_resize=args.scale, upscaling_resize_w=args.width or 512,
                          upscaling_resize_h=args.height or 512, upscaling_crop=not args.no_crop,
                          upscaler_1=args.upscaler, upscaler_2=args.upscaler_2,
                          extras_upscaler_2_visibility=args.upscaler_2_visibility)
    params.validate(upscalers)
    source = open_image(args.image, "image")
    image, text = run_extras(source, params, upscalers)
    save_png(image, args.output, source.info.get("parameters"), chunks={"postprocessing": text} if text else None)
    print(f"wrote {args.output} ({image.width}x{image.height})")
    return 0


def _add_convert_parser(sub) -> None:
    convert = sub.add_parser("convert", help="save a model as one A1111-loadable .safetensors (LoRAs merged in)")
    convert.add_argument("model", help="'toy', a diffusers folder, a checkpoint file or a name in --models-dir")
    convert.add_argument("-o", "--output", required=True, help="the .safetensors file to write")
    convert.add_argument("--lora", action="append", help="NAME_OR_PATH[:WEIGHT] to merge in (repeatable)")
    convert.add_argument("--vae", default=None, help="a VAE file or folder to put in instead of the model's")
    convert.add_argument("--models-dir", default=None, help="default: $SDRT_MODELS_ROOT")
    convert.add_argument("--fp32", action="store_true", help="keep float32 weights (default fp16, as A1111 saves)")
    convert.set_defaults(func=_cmd_convert)


def _add_export_parser(sub) -> None:
    export = sub.add_parser("export", help="export a model's components for another runtime (ONNX, Core ML)")
    export.add_argument("model", help="'toy', a diffusers folder, a checkpoint file or a name in --models-dir")
    export.add_argument("--to", default="onnx", choices=["onnx", "tensorrt", "coreml"])
    export.add_argument("-o", "--output", required=True, help="the folder to write")
    export.add_argument("--fp16", action="store_true", help="onnx: fp16 weights (Core ML packages are always fp16)")
    export.add_argument("--openvino-ir", action="store_true",
                        help="onnx: also an OpenVINO IR of each graph (attention fused), which --backend openvino "
                        "prefers: its fastest CPU path")
    export.add_argument("--attention", default="original", choices=["original", "split_einsum"],
                        help="coreml: split_einsum suits the Neural Engine")
    export.add_argument("--palettize", type=int, default=None, help="coreml: palettize weights to N bits")
    export.add_argument("--size", type=int, default=None, help="coreml: image size in pixels (default: the model's)")
    export.add_argument("--lora", action="append", help="NAME_OR_PATH[:WEIGHT] merged before export (repeatable)")
    export.add_argument("--controlnet", action="append",
                        help="a ControlNet (name in models/ControlNet, path, or toy_canny / toy_seg) exported beside "
                             "the model, with the UNet taking its residuals (repeatable; onnx: for ControlNet units "
                             "on --backend onnxruntime)")
    export.add_argument("--models-dir", default=None, help="default: $SDRT_MODELS_ROOT")
    export.set_defaults(func=_cmd_export)


def _add_bench_parser(sub) -> None:
    bench = sub.add_parser("bench", help="time txt2img end to end and per stage (optionally against a second config)")
    bench.add_argument("--model", default="toy")
    bench.add_argument("--backend", default="torch", choices=BACKENDS)
    bench.add_argument("--dtype", default=None, choices=list(DTYPE_NAMES),
                       help="torch: the weights' dtype; openvino: its inference precision (default: the backend's)")
    bench.add_argument("--device", default="cpu")
    bench.add_argument("--attention", default="sdpa", choices=["sdpa", "sdrt"])
    bench.add_argument("--compile", default="off", choices=list(COMPILE_MODES),
                       help="torch backend: torch.compile the UNet (warm-up runs compile; they are not timed)")
    bench.add_argument("--sampler-loop", default="python", choices=["python", "cpp"])
    bench.add_argument("--size", type=int, default=None, help="pixels (default: the model's native size)")
    bench.add_argument("--batch-size", type=int, default=1)
    bench.add_argument("--steps", type=int, default=20)
    bench.add_argument("--sampler", default="Euler a")
    bench.add_argument("--cfg-scale", type=float, default=7.0)
    bench.add_argument("--warmup", type=int, default=1)
    bench.add_argument("--repeats", type=int, default=5)
    bench.add_argument("--compare", default=None, metavar="KEY=VALUE,...",
                       help="a second configuration (e.g. attention=sdrt or backend=onnxruntime,model=DIR,dtype= "
                       "where an empty value means the default), run "
                       "alternately with the first; prints the ratio")
    bench.add_argument("--sweep", default=None, metavar="KEY=V1,V2,...",
                       help="run at each value of one setting, e.g. size=64,128,256 or batch=1,2,4")
    bench.add_argument("--plot", default=None, metavar="FILE.png", help="chart the results (needs matplotlib)")
    bench.add_argument("--json", default=None, help="write the results here")
    bench.set_defaults(func=_cmd_bench)


def _add_serve_parser(sub) -> None:
    srv = sub.add_parser("serve", help="AUTOMATIC1111-compatible HTTP API (/sdapi/v1) on FastAPI + uvicorn")
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    srv.add_argument("--port", type=int, default=7860)
    srv.add_argument("--listen", action="store_true", help="bind 0.0.0.0 (A1111's --listen); needs --api-auth")
    srv.add_argument("--api-auth", default=None, metavar="USER:PASS[,USER2:PASS2]",
                     help="HTTP Basic credentials required on every route")
    srv.add_argument("--insecure-no-auth", action="store_true",
                     help="allow a non-loopback address without --api-auth (e.g. behind an authenticating proxy)")
    srv.add_argument("--model", default="toy", help="checkpoint loaded at start: 'toy' or a name in --models-dir")
    srv.add_argument("--models-dir", default=None, help="A1111-style root (models/Stable-diffusion, Lora, VAE, "
                     "embeddings); clients' model names resolve only inside it")
    srv.add_argument("--device", default="cpu")
    srv.add_argument("--attention", default="sdpa", choices=["sdpa", "sdrt"])
    srv.add_argument("--compile", default="off", choices=list(COMPILE_MODES),
                     help="torch.compile the UNet (the first job at each size compiles)")
    srv.add_argument("--queue-size", type=int, default=8, help="jobs that may wait; more get 503 + Retry-After")
    srv.add_argument("--max-side", type=int, default=2048, help="largest width/height accepted")
    srv.add_argument("--max-steps", type=int, default=150)
    srv.add_argument("--max-batch-size", type=int, default=8)
    srv.add_argument("--max-n-iter", type=int, default=16)
    srv.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    srv.set_defaults(func=_cmd_serve)


def _add_models_parser(sub) -> None:
    models = sub.add_parser("models", help="list the checkpoints, LoRAs, VAEs and embeddings in the model folders")
    models.add_argument("--models-dir", default=None, help="default: $SDRT_MODELS_ROOT")
    models.add_argument("--kind", choices=["checkpoints", "lora", "vae", "embeddings"], default=None)
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=_cmd_models)


def _add_png_info_parser(sub) -> None:
    info_png = sub.add_parser("png-info", help="print the generation parameters stored in an image")
    info_png.add_argument("image")
    info_png.add_argument("--json", action="store_true", help="print them parsed, as JSON")
    info_png.set_defaults(func=_cmd_png_info)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, PermissionError) as exc:  # bad input: one clear line, no traceback
        print(f"sdrt {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
