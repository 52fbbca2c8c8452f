"""Fused sampler-step kernels (sdrt._C) vs the same math written as torch ops.

Run:  python bench/bench_step_kernels.py [--device cpu|cuda] [--dtype float32 ...] [--out FILE]
Prints a table and writes JSON (default bench/results/step_kernels-<device>.json). The ratio is
torch time / sdrt time, measured alternately in one process (>1 means the fused kernel is faster).
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timer import machine_description, time_pair, write_results  # noqa: E402

from sdrt import kernels  # noqa: E402
from sdrt.kernels import reference as ref  # noqa: E402


def cases(x, den, old, noise, img):
    """(name, fused call, torch-ops call) for one latent / image size."""
    conds3 = torch.stack([den, old, noise])
    return [
        ("cfg_combine", lambda: kernels.cfg_combine(x, den[None], [1.0], 7.0),
         lambda: ref.cfg_combine(x, den[None], [1.0], 7.0)),
        ("cfg_combine_and3", lambda: kernels.cfg_combine(x, conds3, [1.0, 0.5, 0.3], 7.0),
         lambda: ref.cfg_combine(x, conds3, [1.0, 0.5, 0.3], 7.0)),
        ("euler_step", lambda: kernels.euler_step(x, den, 2.0, 1.5), lambda: ref.euler_step(x, den, 2.0, 1.5)),
        ("euler_ancestral_step", lambda: kernels.euler_ancestral_step(x, den, noise, 2.0, 1.5),
         lambda: ref.euler_ancestral_step(x, den, noise, 2.0, 1.5)),
        ("dpmpp_2m_step", lambda: kernels.dpmpp_2m_step(x, den, 2.0, 1.5, old_denoised=old, sigma_prev=2.6),
         lambda: ref.dpmpp_2m_step(x, den, 2.0, 1.5, old_denoised=old, sigma_prev=2.6)),
        ("scale_latents", lambda: kernels.scale_latents(x, 0.18215), lambda: ref.scale_latents(x, 0.18215)),
        ("to_rgb_uint8", lambda: kernels.to_rgb_uint8(img), lambda: ref.to_rgb_uint8(img)),
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", nargs="+", default=None, help="default: float32 on cpu, float16 float32 on cuda")
    p.add_argument("--batches", nargs="+", type=int, default=[1, 2, 4, 8])
    p.add_argument("--latent-sizes", nargs="+", type=int, default=[64, 128], help="latent side (image side / 8)")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    dtypes = args.dtype or (["float32"] if args.device == "cpu" else ["float16", "float32"])
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    gen = torch.Generator().manual_seed(0)

    rows = []
    print(f"{'op':<22}{'shape':<20}{'dtype':<9}{'torch ms':>10}{'sdrt ms':>10}{'ratio':>8}")
    for dtype in dtypes:
        for side in args.latent_sizes:
            for batch in args.batches:
                shape = (batch, 4, side, side)
                x, den, old, noise = (torch.randn(shape, generator=gen).to(args.device, getattr(torch, dtype))
                                      for _ in range(4))
                img = torch.rand((batch, 3, side * 8, side * 8), generator=gen).mul(2.2).sub(1.1)
                img = img.to(args.device, getattr(torch, dtype))
                for name, fused, baseline in cases(x, den, old, noise, img):
                    t_sdrt, t_torch = time_pair(fused, baseline, repeats=args.repeats, sync=sync)
                    ratio = t_torch.median_s / t_sdrt.median_s
                    shown = tuple(img.shape) if name == "to_rgb_uint8" else shape
                    rows.append({"op": name, "shape": list(shown), "dtype": dtype, "device": args.device,
                                 "torch": t_torch, "sdrt": t_sdrt, "ratio_torch_over_sdrt": round(ratio, 3)})
                    print(f"{name:<22}{str(shown):<20}{dtype:<9}{t_torch.median_s * 1e3:>10.3f}"
                          f"{t_sdrt.median_s * 1e3:>10.3f}{ratio:>8.2f}")
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"step_kernels-{args.device}.json")
    write_results(out, {"benchmark": "step_kernels", "baseline": "sdrt.kernels.reference (torch ops)",
                        "machine": machine_description(), "results": rows})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
