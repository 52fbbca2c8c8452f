"""Hires fix time per stage: first-pass UNet, upscale, VAE encode, hires-pass UNet, VAE decode, the
rest (text encoding, sampler, glue), for each kind of upscaler (latent mode, Lanczos, a model
upscaler), on the toy (64 -> 128 px) and on an SD 1.5-sized model with random weights at a reduced
size (128 -> 256 px: a 2-core CPU cannot run 512 px in a benchmark's time). The plain first pass
alone is timed in the same run as the baseline (ratio = hires total / first pass alone).

    python bench/bench_hires.py [--sd15] [--repeats 3] [--out bench/results/hires-cpu.json]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timer import machine_description, write_results  # noqa: E402


class StageClock:
    """Wraps a pipeline's backend calls and the hires start to add up time per stage, each stage's
    own time only (a VAE call inside the hires start counts as VAE, not twice)."""

    def __init__(self, pipe, first_side: int):
        self.seconds, self.pipe, self.first_side = defaultdict(float), pipe, first_side
        self._inner = [0.0]  # time of timed calls nested in the current one
        backend = pipe.backend
        self._undo = []
        for name, stage in (("vae_decode", "vae decode"), ("vae_encode", "vae encode")):
            self._wrap(backend, name, lambda *a, stage=stage, **k: stage)
        # the UNet: which pass by the latent size it gets (the first pass's side is known)
        self._wrap(pipe.denoiser, "unet",
                   lambda x, *a, **k: "first-pass unet" if x.shape[-1] == first_side // 8 else "hires-pass unet")
        from sdrt.pipelines import hires

        self._wrap(hires, "hires_start", lambda *a, **k: "hires start")  # the upscale and any VAE encode

    def _wrap(self, owner, name, stage_of):
        real = getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            self._inner.append(0.0)
            try:
                return real(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                self.seconds[stage_of(*args, **kwargs)] += elapsed - self._inner.pop()
                self._inner[-1] += elapsed
        setattr(owner, name, timed)
        self._undo.append(lambda: setattr(owner, name, real))

    def close(self):
        for undo in reversed(self._undo):
            undo()


def time_hires(pipe, side: int, upscaler: str, steps: int, repeats: int) -> dict:
    params = dict(width=side, height=side, steps=steps, seed=1, cfg_scale=7.0, sampler_name="Euler a")
    rows = []
    for _ in range(repeats):
        start = time.perf_counter()
        pipe.txt2img("a red circle", **params)
        first_alone = time.perf_counter() - start
        clock = StageClock(pipe, side)
        try:
            start = time.perf_counter()
            pipe.txt2img("a red circle", enable_hr=True, hr_scale=2.0, hr_upscaler=upscaler,
                         denoising_strength=0.5, **params)
            total = time.perf_counter() - start
        finally:
            clock.close()
        stages = dict(clock.seconds)
        stages["upscale"] = stages.pop("hires start")  # its own time: the VAE calls in it are theirs
        stages["rest"] = total - sum(stages.values())
        rows.append({"first_pass_alone_s": first_alone, "total_s": total, **{f"{k}_s": v for k, v in stages.items()}})
    median = {k: sorted(r.get(k, 0.0) for r in rows)[len(rows) // 2] for k in rows[0]}
    median["ratio_total_over_first_pass"] = round(median["total_s"] / median["first_pass_alone_s"], 2)
    print(f"  {upscaler:<22}" + "  ".join(f"{k[:-2]} {v:.3f}" for k, v in median.items() if k.endswith("_s")))
    return {"upscaler": upscaler, "side": side, "hires_side": 2 * side, "steps": steps, "repeats": repeats,
            "median": {k: round(v, 4) for k, v in median.items()}}


def sd15_random_pipeline():
    """SD 1.5's architecture with random weights (860M-parameter UNet), fp32 on the CPU."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from sdrt.backends.torch_backend import TorchBackend
    from sdrt.models.architectures import ARCHITECTURES
    from sdrt.pipelines import ModelInfo, Pipeline
    from sdrt.prompt import get_tokenizer
    from sdrt.sampling.schedules import betas_from_config, discrete_sigmas

    arch = ARCHITECTURES["sd1"]
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**arch.unet).eval()
    vae = AutoencoderKL(**arch.vae).eval()
    text = CLIPTextModel(CLIPTextConfig(**arch.text_encoders["text_encoder"])).eval()
    info = ModelInfo(name="sd15-random", scaling_factor=float(vae.config.scaling_factor), default_size=512, family="sd1")
    return Pipeline(TorchBackend(unet, text, vae, device="cpu", dtype=torch.float32), get_tokenizer(),
                    discrete_sigmas(betas_from_config(arch.scheduler)), info)


def main() -> int:
    import sdrt
    from sdrt.postprocess.upscalers import TOY_UPSCALER

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sd15", action="store_true", help="also the SD 1.5-sized random model (slow)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                 "hires-cpu.json"))
    args = p.parse_args()
    upscalers = ["Latent", "Latent (bicubic antialiased)", "Lanczos", TOY_UPSCALER]
    results = []
    print("toy 64 -> 128 px, 20 steps + 20 hires steps")
    toy = sdrt.load("toy")
    results += [{"model": "toy", **time_hires(toy, 64, u, 20, args.repeats)} for u in upscalers]
    if args.sd15:
        print("SD 1.5-sized, random weights, 128 -> 256 px, 4 steps + 4 hires steps")
        sd15 = sd15_random_pipeline()
        results += [{"model": "sd15-random", **time_hires(sd15, 128, u, 4, 1)} for u in upscalers]
    write_results(args.out, {"machine": machine_description(), "runs": results})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
