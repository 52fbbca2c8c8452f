"""SD1.5 sampling speed at 512x512 (CFG 7, batch 1, Euler): diffusers' StableDiffusionPipeline
eager and with torch.compile (what users pick today) against sdrt's torch backend eager and
compiled (backends/compiled_unet.py), full-size random weights, one process.

Each candidate holds its own copy of the modules (compiling changes the UNet's memory format).
Every candidate runs once for warm-up (that is where compiling happens; its seconds are
reported as warmup_s), then the measured runs alternate between candidates. it/s is A1111's:
sampler steps per second between step callbacks (text encoder and VAE left out). Numerics: each
candidate's UNet on one CFG call against an fp32 eager copy on the same device (relative L2;
issue 18 allows 2%).

    python bench/bench_sd15.py --device cuda --out OUT/sd15-cuda.json           (bench/gpu_suite.sh)
    python bench/bench_sd15.py --tiny --steps 3 --repeats 1 --out F.json        (CPU dry run: checks the script)
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pipeline_runs import diffusers_its, euler_scheduler, random_sd1, sdrt_its, sdrt_sd1_pipeline  # noqa: E402
from timer import machine_description, write_results  # noqa: E402

# name -> (implementation, torch.compile mode or "off")
CANDIDATES = {
    "diffusers_eager": ("diffusers", "off"),
    "diffusers_compile": ("diffusers", "default"),
    "diffusers_compile_max_autotune": ("diffusers", "max-autotune"),
    "sdrt_eager": ("sdrt", "off"),
    "sdrt_reduce_overhead": ("sdrt", "reduce-overhead"),
    "sdrt_max_autotune": ("sdrt", "max-autotune"),
}
BASELINE = "diffusers_compile"


def diffusers_candidate(mods, mode: str):
    """StableDiffusionPipeline over `mods`; with a mode, its UNet as diffusers' docs compile it."""
    from diffusers import StableDiffusionPipeline

    from sdrt.prompt import get_tokenizer

    unet, text_encoder, vae = mods[:3]
    if mode != "off":
        unet.to(memory_format=torch.channels_last)
        unet = torch.compile(unet, mode=mode)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=get_tokenizer(), unet=unet,
                                   scheduler=euler_scheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class Candidate:
    def __init__(self, name: str, mods, args, dtype: torch.dtype):
        self.name, (self.impl, mode) = name, CANDIDATES[name]
        if self.impl == "sdrt":
            self.pipe = sdrt_sd1_pipeline(mods, args.device, dtype, args.tiny, compile_mode=mode)
            self.unet_call = lambda x, t, ctx: self.pipe.backend.unet_forward(x, t, ctx)
        else:
            self.pipe = diffusers_candidate(mods, mode)
            self.unet_call = lambda x, t, ctx: self.pipe.unet(x.to(dtype), t, ctx.to(dtype)).sample.float()

    def its(self, size: int, steps: int, sync) -> float:
        run = sdrt_its if self.impl == "sdrt" else diffusers_its
        return run(self.pipe, size, steps, sync)


def unet_inputs(unet, size: int, device: str):
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(2, 4, size // 8, size // 8, generator=g).to(device)
    ctx = torch.randn(2, 77, unet.config.cross_attention_dim, generator=g).to(device)
    return x, torch.tensor([500.0, 500.0], device=device), ctx


@torch.no_grad()
def relative_l2(candidate: Candidate, reference, feed) -> float:
    want = reference(*feed).sample.float()
    got = candidate.unet_call(*feed).float()
    return float((got - want).norm() / want.norm())


def measure(args, dtype: torch.dtype, sync) -> dict:
    base = random_sd1(args.device, dtype, args.tiny)
    reference = copy.deepcopy(base[0]).float()
    feed = unet_inputs(reference, args.size, args.device)
    candidates, results = [], {}
    for name in args.candidates:
        candidate = Candidate(name, copy.deepcopy(base), args, dtype)
        started = time.perf_counter()
        candidate.its(args.size, 2, sync)  # warm-up: compiles at this size
        results[name] = {"warmup_s": time.perf_counter() - started, "samples": [],
                         "unet_relative_l2_vs_fp32": relative_l2(candidate, reference, feed)}
        candidates.append(candidate)
        print(f"{name}: warm-up {results[name]['warmup_s']:.1f} s, UNet rel. L2 vs fp32 "
              f"{results[name]['unet_relative_l2_vs_fp32']:.2e}", flush=True)
    for _ in range(args.repeats):
        for candidate in candidates:
            results[candidate.name]["samples"].append(candidate.its(args.size, args.steps, sync))
    for r in results.values():
        r["it_per_s_median"] = statistics.median(r["samples"])
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--candidates", default=",".join(CANDIDATES), help=f"comma-separated, of {', '.join(CANDIDATES)}")
    p.add_argument("--tiny", action="store_true", help="the toy architecture (to check the script)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    args.candidates = [c.strip() for c in args.candidates.split(",") if c.strip()]
    unknown = [c for c in args.candidates if c not in CANDIDATES]
    if unknown or not args.candidates:
        p.error(f"--candidates {unknown or 'empty'}; valid: {', '.join(CANDIDATES)}")
    dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    results = measure(args, dtype, sync)
    ratios = {f"{name}_over_{BASELINE}": r["it_per_s_median"] / results[BASELINE]["it_per_s_median"]
              for name, r in results.items() if BASELINE in results and name != BASELINE}
    for name, r in results.items():
        print(f"{name:<32} {r['it_per_s_median']:8.3f} it/s")
    print("ratios: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    if args.out:
        write_results(args.out, {"benchmark": "sd1.5 sampling it/s (random weights, Euler, CFG 7, batch 1)",
                                 "size": args.size, "steps": args.steps, "dtype": str(dtype), "device": args.device,
                                 "tiny": args.tiny, "baseline": BASELINE, "results": results, "ratios": ratios,
                                 "machine": machine_description()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
