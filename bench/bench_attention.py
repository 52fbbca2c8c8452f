"""sdrt's fused attention vs torch's scaled_dot_product_attention on SD 1.5's attention shapes:
batch 2 (CFG) x 8 heads, self-attention at 4096/1024/256/64 tokens (head dims 40/80/160/160) and
cross-attention over 77 text tokens; with --device cuda also SDXL's (head dim 64 at 4096 and 1024
tokens at 1024 px). Ratio = SDPA time / sdrt time (> 1: sdrt faster).
Run:  python bench/bench_attention.py [--device cuda] [--dtype bfloat16] [--out FILE]
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timer import machine_description, time_pair, write_results  # noqa: E402

from sdrt import kernels  # noqa: E402

SD15 = [(4096, 40), (1024, 80), (256, 160), (64, 160)]  # (tokens, head_dim) per UNet level
SDXL = [(4096, 64), (1024, 64)]  # 1024 px: the two attention levels (heads of 64)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu", help="cpu (fp32) or cuda (fp16)")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=None,
                   help="default: float32 on cpu, float16 on cuda")
    p.add_argument("--out", default=None, help="default: bench/results/attention-DEVICE[-DTYPE].json")
    args = p.parse_args()
    default_dtype = "float16" if args.device == "cuda" else "float32"
    dtype_name = args.dtype or default_dtype
    dtype = getattr(torch, dtype_name)
    if args.out is None:
        suffix = "" if dtype_name == default_dtype else f"-{dtype_name}"
        args.out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                f"attention-{args.device}{suffix}.json")
    rows = []
    print(f"{'kind':<7}{'q x k x d':<18}{'sdpa ms':>10}{'sdrt ms':>10}{'ratio':>8}")
    for kind in ("self", "cross"):
        for tokens, d in SD15 + (SDXL if args.device == "cuda" else []):
            keys = tokens if kind == "self" else 77
            g = torch.Generator().manual_seed(0)
            q, k, v = (torch.randn(2, 8, n, d, generator=g).to(args.device, dtype) for n in (tokens, keys, keys))
            sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
            t_sdrt, t_sdpa = time_pair(lambda: kernels.attention(q, k, v),
                                       lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v),
                                       warmup=1, repeats=args.repeats if tokens * keys < 4e6 else 3, sync=sync)
            ratio = t_sdpa.median_s / t_sdrt.median_s
            rows.append({"kind": kind, "shape": [2, 8, tokens, keys, d], "sdpa": t_sdpa, "sdrt": t_sdrt,
                         "ratio_sdpa_over_sdrt": round(ratio, 3)})
            print(f"{kind:<7}{f'{tokens}x{keys}x{d}':<18}{t_sdpa.median_s * 1e3:>10.2f}{t_sdrt.median_s * 1e3:>10.2f}"
                  f"{ratio:>8.2f}")
    write_results(args.out, {"benchmark": f"attention_{args.device}", "dtype": dtype_name,
                             "baseline": f"torch scaled_dot_product_attention ({args.device}, {dtype_name})",
                             "machine": machine_description(), "results": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
