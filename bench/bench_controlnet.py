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
from timer import machine_description, write_results  # noqa: E402

PROMPT = "a photograph of a lighthouse on a cliff at dawn, highly detailed"
UNIT_COUNTS = (0, 1, 3)


def modules(device: str, dtype: torch.dtype, tiny: bool):
    """(unet, text_encoder, vae, [3 ControlNets]) with random weights (the toy's when tiny)."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from sdrt.models.architectures import ARCHITECTURES

    arch = ARCHITECTURES["toy" if tiny else "sd1"]
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**arch.unet)
        text_encoder = CLIPTextModel(CLIPTextConfig(**arch.text_encoders["text_encoder"]))
        vae = AutoencoderKL(**arch.vae)
        controlnets = [ControlNetModel.from_unet(unet) for _ in range(3)]
    return [m.to(dtype).eval().requires_grad_(False) for m in (unet, text_encoder, vae, *controlnets)]


def sdrt_pipeline(mods, device: str, dtype: torch.dtype, tiny: bool):
    from sdrt.backends.torch_backend import TorchBackend
    from sdrt.models.architectures import ARCHITECTURES
    from sdrt.pipelines import ModelInfo, Pipeline
    from sdrt.prompt import get_tokenizer
    from sdrt.sampling.schedules import betas_from_config, discrete_sigmas

    unet, text_encoder, vae = mods[:3]
    arch = ARCHITECTURES["toy" if tiny else "sd1"]
    info = ModelInfo(name="random", scaling_factor=float(vae.config.scaling_factor),
                     default_size=arch.resolution, family=arch.family)
    return Pipeline(TorchBackend(unet, text_encoder, vae, device=device, dtype=dtype), get_tokenizer(),
                    discrete_sigmas(betas_from_config(arch.scheduler)), info, batch_invariant=False)


def diffusers_pipeline(mods, count: int):
    from diffusers import EulerDiscreteScheduler, MultiControlNetModel, StableDiffusionControlNetPipeline

    from sdrt.models.architectures import SCHEDULER
    from sdrt.prompt import get_tokenizer

    unet, text_encoder, vae, *controlnets = mods
    scheduler = EulerDiscreteScheduler(**{k: v for k, v in SCHEDULER.items() if k not in ("clip_sample", "set_alpha_to_one")})
    pipe = StableDiffusionControlNetPipeline(vae=vae, text_encoder=text_encoder, tokenizer=get_tokenizer(), unet=unet,
                                             controlnet=MultiControlNetModel(controlnets[:count]), scheduler=scheduler,
                                             safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _its(stamps: list[float]) -> float:
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def run_sdrt(pipe, units: list, size: int, steps: int, sync) -> float:
    stamps: list[float] = []

    def callback(info):
        sync()
        stamps.append(time.perf_counter())
    pipe.txt2img(PROMPT, width=size, height=size, steps=steps, sampler_name="Euler", cfg_scale=7.0, seed=1,
                 callback=callback, controlnet=units)
    return _its(stamps)


def run_diffusers(pipes: dict, hint, count: int, size: int, steps: int, sync) -> float:
    from PIL import Image

    stamps: list[float] = []

    def callback(p, i, t, kwargs):
        sync()
        stamps.append(time.perf_counter())
        return kwargs
    if count == 0:
        pipe, extra = pipes[0], {}
    else:
        pipe, extra = pipes[count], {"image": [Image.fromarray(hint)] * count,
                                      "controlnet_conditioning_scale": [1.0] * count}
    pipe(PROMPT, width=size, height=size, num_inference_steps=steps, guidance_scale=7.0,
         callback_on_step_end=callback, output_type="latent", **extra)
    return _its(stamps)


def measure(args, dtype: torch.dtype, sync) -> dict:
    from diffusers import StableDiffusionPipeline

    mods = modules(args.device, dtype, args.tiny)
    ours = sdrt_pipeline(mods, args.device, dtype, args.tiny)
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
            runs = {"sdrt": lambda steps: run_sdrt(ours, units, args.size, steps, sync),
                    "diffusers": lambda steps: run_diffusers(theirs, hint, n, args.size, steps, sync)}
            if exported is not None:
                same = [{**u, "model": folders[0]} for u in units]
                runs["sdrt_onnxruntime"] = lambda steps: run_sdrt(exported, same, args.size, steps, sync)
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
