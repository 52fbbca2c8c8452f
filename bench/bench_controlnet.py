"""ControlNet sampling speed: sdrt's pipeline against diffusers' StableDiffusionControlNetPipeline
on the same full-size SD1.5 UNet and ControlNets (random weights), with 0, 1 and 3 units, in one
process, runs alternating. The ratios users feel: a ControlNet run against the plain run of the
same implementation, and sdrt against diffusers at the same number of units. With --onnxruntime,
sdrt's pipeline on an ONNX export of the same modules (`to_onnx(..., controlnets=...)`, fp32 here
as on the CPU) joins the alternation; its units all use the first ControlNet (one graph in memory
instead of three: the same work per step).

it/s is A1111's: sampler steps per second (CFG, so two UNet rows per step), timed between step
callbacks, so text encoding and the VAE are left out. Units use a ready control image (module
"none"), so the preprocessors are not timed either.

    python bench/bench_controlnet.py --device cpu --size 256 --steps 3 --out bench/results/controlnet-cpu.json
    python bench/bench_controlnet.py --device cuda --size 512 --steps 20 --out .../controlnet-cuda.json
    python bench/bench_controlnet.py --device cpu --size 256 --steps 3 --onnxruntime --out ...
    python bench/bench_controlnet.py --tiny   (the toy model: checks the script, measures little)
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pipeline_runs import diffusers_its, euler_scheduler, random_sd1, sdrt_its, sdrt_sd1_pipeline  # noqa: E402
from timer import machine_description, write_results  # noqa: E402

UNIT_COUNTS = (0, 1, 3)


def diffusers_pipeline(mods, count: int):
    from diffusers import MultiControlNetModel, StableDiffusionControlNetPipeline

    from sdrt.prompt import get_tokenizer

    unet, text_encoder, vae, *controlnets = mods
    pipe = StableDiffusionControlNetPipeline(vae=vae, text_encoder=text_encoder, tokenizer=get_tokenizer(), unet=unet,
                                             controlnet=MultiControlNetModel(controlnets[:count]),
                                             scheduler=euler_scheduler(), safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_diffusers(pipes: dict, hint, count: int, size: int, steps: int, sync) -> float:
    from PIL import Image

    if count == 0:
        return diffusers_its(pipes[0], size, steps, sync)
    return diffusers_its(pipes[count], size, steps, sync, image=[Image.fromarray(hint)] * count,
                         controlnet_conditioning_scale=[1.0] * count)


def measure(args, dtype: torch.dtype, sync) -> dict:
    from diffusers import StableDiffusionPipeline

    mods = random_sd1(args.device, dtype, args.tiny, controlnets=3)
    ours = sdrt_sd1_pipeline(mods, args.device, dtype, args.tiny)
    plain = StableDiffusionPipeline(vae=mods[2], text_encoder=mods[1], tokenizer=diffusers_pipeline(mods, 1).tokenizer,
                                    unet=mods[0], scheduler=diffusers_pipeline(mods, 1).scheduler, safety_checker=None,
                                    feature_extractor=None, requires_safety_checker=False)
    plain.set_progress_bar_config(disable=True)
    theirs = {0: plain, 1: diffusers_pipeline(mods, 1), 3: diffusers_pipeline(mods, 3)}
    hint = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    samples: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        folders = []
        for i, controlnet in enumerate(mods[3:]):
            folders.append(os.path.join(tmp, f"cn{i}"))
            controlnet.save_pretrained(folders[-1])
        exported = onnxruntime_pipeline(ours, folders[:1], os.path.join(tmp, "onnx"), args.device) \
            if args.onnxruntime else None
        for n in UNIT_COUNTS:
            units = [{"module": "none", "model": f, "image": hint, "resize_mode": "Just Resize"} for f in folders[:n]]
            runs = {"sdrt": lambda steps: sdrt_its(ours, args.size, steps, sync, controlnet=units),
                    "diffusers": lambda steps: run_diffusers(theirs, hint, n, args.size, steps, sync)}
            if exported is not None:
                same = [{**u, "model": folders[0]} for u in units]
                runs["sdrt_onnxruntime"] = lambda steps: sdrt_its(exported, args.size, steps, sync, controlnet=same)
            for run in runs.values():  # warm-up
                run(2)
            for _ in range(args.repeats):
                for name, run in runs.items():
                    samples.setdefault(f"{name}_{n}", []).append(run(args.steps))
    return {k: {"it_per_s_median": statistics.median(v), "samples": v} for k, v in samples.items()}


def onnxruntime_pipeline(ours, controlnet_folders: list, out_dir: str, device: str):
    """`ours` exported with the ControlNets (units name them by their folders' paths), on ONNX Runtime."""
    import sdrt
    from sdrt.export import to_onnx

    started = time.perf_counter()
    to_onnx(ours, out_dir, controlnets=controlnet_folders, components=["text_encoder", "unet", "vae_decoder"],
            progress=lambda m: print(m, file=sys.stderr))
    print(f"exported in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return sdrt.load(out_dir, backend="onnxruntime", device=device)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--tiny", action="store_true", help="the toy architecture (to check the script)")
    p.add_argument("--onnxruntime", action="store_true", help="also sdrt on an ONNX export (fp32) of the same modules")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.onnxruntime and args.device != "cpu":  # to_onnx traces CPU fp32 modules (and makes them fp32)
        p.error("--onnxruntime: measure on --device cpu (the export traces the CPU fp32 modules)")
    dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    result = measure(args, dtype, sync)
    its = {k: v["it_per_s_median"] for k, v in result.items()}
    ratios = {f"{impl}_{n}_units_over_plain": its[f"{impl}_{n}"] / its[f"{impl}_0"] for impl in ("sdrt", "diffusers")
              for n in UNIT_COUNTS[1:]}
    ratios.update({f"sdrt_over_diffusers_{n}_units": its[f"sdrt_{n}"] / its[f"diffusers_{n}"] for n in UNIT_COUNTS})
    if args.onnxruntime:
        ratios.update({f"sdrt_onnxruntime_{n}_units_over_plain": its[f"sdrt_onnxruntime_{n}"] / its["sdrt_onnxruntime_0"]
                       for n in UNIT_COUNTS[1:]})
        ratios.update({f"onnxruntime_over_torch_{n}_units": its[f"sdrt_onnxruntime_{n}"] / its[f"sdrt_{n}"]
                       for n in UNIT_COUNTS})
    for n in UNIT_COUNTS:
        print(f"{n} units: " + ", ".join(f"{k.rsplit('_', 1)[0]} {v:.3f} it/s" for k, v in its.items()
                                         if k.endswith(f"_{n}")))
    print("ratios: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    if args.out:
        write_results(args.out, {"benchmark": "controlnet sampling it/s (SD1.5 random weights, Euler, CFG 7)",
                                 "size": args.size, "steps": args.steps, "dtype": str(dtype), "device": args.device,
                                 "tiny": args.tiny, "results": result, "ratios": ratios,
                                 "machine": machine_description()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
