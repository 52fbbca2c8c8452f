"""The ``sdrt txt2img`` / ``sdrt img2img`` commands: their options come from GenerationParams'
field metadata (one place), the model options from here."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from .backends.compiled_unet import COMPILE_MODES
from .loading import BACKENDS, DTYPE_NAMES
from .pipelines.params import GenerationParams

_TYPES = {"int": int, "float": float, "str": str}


def _argument_type(annotation: str):
    for name, kind in _TYPES.items():
        if name in annotation.replace("Sequence[str]", ""):
            return kind
    return str


def _add_param_arguments(p: argparse.ArgumentParser, img2img: bool) -> None:
    mode = "img2img" if img2img else "txt2img"
    for f in dataclasses.fields(GenerationParams):
        flags, meta = f.metadata["cli"], f.metadata
        if not flags or meta["only"] not in (None, mode):
            continue
        default = None if f.default is dataclasses.MISSING else f.default
        if "bool" in f.type:
            p.add_argument(*flags, dest=f.name, action="store_true", help=meta["help"] or None)
        else:
            p.add_argument(*flags, dest=f.name, type=_argument_type(f.type), default=default,
                           help=meta["help"] or None)


def add_generation_arguments(p: argparse.ArgumentParser, default_output: str, img2img: bool) -> None:
    if img2img:
        p.add_argument("init_image")
    p.add_argument("prompt")
    p.add_argument("-o", "--output", default=default_output, help="PNG path (numbered when several images)")
    p.add_argument("--model", default="toy", help="'toy' or 'toy-xl' (bundled), a diffusers folder, a .safetensors/.ckpt "
                   "checkpoint, or a checkpoint name inside --models-dir")
    p.add_argument("--vae", default=None, help="a VAE file or folder (or a name inside --models-dir)")
    p.add_argument("--models-dir", default=None, help="A1111-style folder holding models/Stable-diffusion, "
                   "models/Lora, models/VAE, models/embeddings (default: $SDRT_MODELS_ROOT)")
    p.add_argument("--embeddings-dir", default=None, help="another folder of textual-inversion embeddings")
    p.add_argument("--device", default="cpu")
    p.add_argument("--attention", default="sdpa", choices=["sdpa", "sdrt"],
                   help="torch backend: torch's SDPA or sdrt's fused CPU attention kernel")
    p.add_argument("--compile", default="off", choices=list(COMPILE_MODES),
                   help="torch backend: torch.compile the UNet (static shapes, channels_last); the first job at each size compiles")
    p.add_argument("--sampler-loop", default="python", choices=["python", "cpp"],
                   help="cpp: the C++ sampler loop for the samplers it covers (same results)")
    p.add_argument("--backend", default="torch", choices=BACKENDS,
                   help="onnxruntime, openvino: --model is a folder written by `sdrt export --to onnx`; tensorrt: "
                   "an engine folder (sdrt.export.to_tensorrt; needs TensorRT and a GPU)")
    p.add_argument("--dtype", default=None, choices=list(DTYPE_NAMES),
                   help="torch: the weights' dtype (default fp32 on the CPU; bf16 is faster there but changes the "
                   "picture of a seed); openvino: its inference precision (default bf16 where the CPU has it)")
    if img2img:
        p.add_argument("--mask", default=None, help="inpainting mask image (white = repaint)")
    _add_param_arguments(p, img2img)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")


def params_from_args(args: argparse.Namespace) -> GenerationParams:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(GenerationParams) if hasattr(args, f.name)}
    hires = [f for f in dataclasses.fields(GenerationParams) if f.name.startswith("hr_") and f.name in values]
    if any(values[f.name] != f.default for f in hires):
        values["enable_hr"] = True  # any --hr-* option asks for the hires fix
    if getattr(args, "init_image", None):
        values["init_images"] = [open_image(args.init_image, "init image")]
        values["mask"] = open_image(args.mask, "mask") if args.mask else None
    return GenerationParams(**values)


def open_image(path: str, what: str):
    from PIL import Image

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path}: no such file")
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except OSError as exc:
        raise ValueError(f"{what} {path}: not a readable image ({exc})") from exc


def _progress(info: dict) -> None:
    done, total = info["i"] + 1, info["total"]
    bar = "#" * (30 * done // total)
    what = "hires pass" if info.get("hires_pass") else "sampling"
    print(f"\r{what} [{bar:<30}] {done}/{total}", end="", file=sys.stderr, flush=True)


def run_generation(args: argparse.Namespace) -> int:
    from . import load
    from .pipelines import JobHooks
    from .pipelines.png import save_png

    out_dir = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(out_dir):
        raise FileNotFoundError(f"output folder {out_dir} does not exist")
    params = params_from_args(args)
    extra = {"attention": args.attention, "compile": args.compile} if args.backend == "torch" else {}
    extra["dtype"] = args.dtype
    pipe = load(args.model, backend=args.backend, device=args.device, vae=args.vae, models_dir=args.models_dir,
                embeddings_dir=args.embeddings_dir, sampler_loop=args.sampler_loop, **extra)
    if pipe.embeddings is not None and pipe.embeddings.skipped and not args.quiet:
        for path, why in pipe.embeddings.skipped.items():
            print(f"skipped embedding {path}: {why}", file=sys.stderr)
    hires_pipe = None
    if params.hr_checkpoint_name:
        hires_pipe = load(params.hr_checkpoint_name, backend=args.backend, device=args.device, vae=args.vae,
                          models_dir=args.models_dir, embeddings_dir=args.embeddings_dir,
                          sampler_loop=args.sampler_loop, **extra)
    result = pipe.generate(params, JobHooks(callback=None if args.quiet else _progress, hires_pipeline=hires_pipe))
    if not args.quiet:
        print(file=sys.stderr)
    paths = _output_paths(args.output, len(result.images))
    for path, image, infotext, seed in zip(paths, result.images, result.infotexts, result.seeds):
        save_png(image, path, infotext)
        print(f"wrote {path} (seed {seed})")
    return 0


def _output_paths(out: str, count: int) -> list[str]:
    if count == 1:
        return [out]
    stem, dot, ext = out.rpartition(".")
    stem, ext = (stem, ext) if dot else (out, "png")
    return [f"{stem}-{i:02d}.{ext}" for i in range(count)]
