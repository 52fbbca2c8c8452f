"""Sampler loop overhead per step: the C++ loop (sdrt._C.sample_loop) vs the Python samplers
(same kernels), with a denoiser stub that returns a precomputed prediction, so only the loop's own
work is timed. Ratio = Python time / C++ time (> 1: the C++ loop costs less).
Run:  python bench/bench_sampler_loop.py [--out FILE]
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timer import machine_description, time_pair, write_results  # noqa: E402

from sdrt.sampling import get_sigmas_karras, samplers  # noqa: E402
from sdrt.sampling.native import sample_native  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                 "sampler_loop-cpu.json"))
    args = p.parse_args()
    rows = []
    sigmas = get_sigmas_karras(args.steps, 0.03, 14.6)
    print(f"{'sampler':<14}{'latent':<16}{'python us/step':>16}{'C++ us/step':>14}{'ratio':>8}")
    for side in (64, 128):
        shape = (1, 4, side, side)
        pred, x0, fresh = torch.randn(shape), torch.randn(shape), torch.randn(shape)
        model = lambda x, s: pred  # noqa: E731
        for name in ("Euler", "Euler a", "DPM++ 2M", "DPM++ 2M SDE", "Heun", "LMS"):
            t_cpp, t_py = time_pair(lambda: sample_native(name, model, x0, sigmas, noise=lambda: fresh),
                                    lambda: samplers[name](model, x0, sigmas, noise=lambda: fresh),
                                    warmup=2, repeats=15)
            per = lambda t: t.median_s / args.steps * 1e6  # noqa: E731
            ratio = t_py.median_s / t_cpp.median_s
            rows.append({"sampler": name, "latent": list(shape), "steps": args.steps, "python": t_py, "cpp": t_cpp,
                         "ratio_python_over_cpp": round(ratio, 3)})
            print(f"{name:<14}{str(shape):<16}{per(t_py):>16.1f}{per(t_cpp):>14.1f}{ratio:>8.2f}")
    write_results(args.out, {"benchmark": "sampler_loop", "baseline": "the Python samplers (same kernels)",
                             "note": "denoiser stub returns a precomputed tensor", "machine": machine_description(),
                             "results": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
