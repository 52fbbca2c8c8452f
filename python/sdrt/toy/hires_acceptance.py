"""The hires-fix acceptance check on the toy: does the hires pass keep what the first pass drew?

For every acceptance prompt (sdrt.toy.acceptance) the first pass (64 px) and the hires result
(128 px, denoising 0.5 by default) are read by the scorer: the hires picture must show the same
colour, shape and position as the first pass, and differ from a plain Lanczos upscale of it (the
second pass really ran).

    python -m sdrt.toy.hires_acceptance [--upscaler Latent ...] [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
from PIL import Image

from . import scorer
from .acceptance import acceptance_prompts

KEPT_THRESHOLD = 0.90   # share of prompts whose colour, shape and position the hires pass keeps
MIN_CHANGE = 2.0        # mean |hires - Lanczos(first pass)| in levels: the second pass ran
ATTRIBUTES = ("colour", "shape", "position")


def _reading(image: Image.Image, colour: str):
    found = scorer._match(scorer.read_image(np.asarray(image.convert("RGB"))), colour)
    return None if found is None else {k: getattr(found, k) for k in ATTRIBUTES}


def run_hires_acceptance(pipe, upscaler: str, *, steps: int = 20, hr_steps: int = 0, denoising_strength: float = 0.5,
                         cfg_scale: float = 5.0, sampler_name: str = "DPM++ 2M", scheduler: str = "Karras",
                         batch: int = 9, per_combination: int = 3) -> dict:
    """Both passes for every prompt; returns the shares of kept attributes and the mean change."""
    items = acceptance_prompts(per_combination)
    rows, started = [], time.perf_counter()
    common = dict(steps=steps, sampler_name=sampler_name, scheduler=scheduler, cfg_scale=cfg_scale)
    for start in range(0, len(items), batch):
        chunk = items[start:start + batch]
        prompts, seed = [it.prompt for it in chunk], chunk[0].seed
        first = pipe.txt2img(prompts, seed=seed, batch_size=len(chunk), **common).images
        hires = pipe.txt2img(prompts, seed=seed, batch_size=len(chunk), enable_hr=True, hr_scale=2.0,
                             hr_upscaler=upscaler, hr_second_pass_steps=hr_steps,
                             denoising_strength=denoising_strength, **common).images
        for it, low, high in zip(chunk, first, hires):
            before, after = _reading(low, it.spec.colour), _reading(high, it.spec.colour)
            plain = np.asarray(low.resize(high.size, Image.Resampling.LANCZOS), dtype=np.float32)
            kept = {k: before is not None and after is not None and before[k] == after[k] for k in ATTRIBUTES}
            rows.append({"prompt": it.prompt, "seed": it.seed, "first": before, "hires": after, **kept,
                         "change": float(np.abs(np.asarray(high, dtype=np.float32) - plain).mean())})
    kept_all = sum(all(r[k] for k in ATTRIBUTES) for r in rows) / len(rows)
    change = float(np.mean([r["change"] for r in rows]))
    return {"upscaler": upscaler, "steps": steps, "hr_steps": hr_steps or steps,
            "denoising_strength": denoising_strength, "sampler": sampler_name, "scheduler": scheduler,
            "cfg_scale": cfg_scale,
            "prompts": len(rows), "kept": {k: round(sum(r[k] for r in rows) / len(rows), 4) for k in ATTRIBUTES},
            "kept_all": round(kept_all, 4), "mean_change_levels": round(change, 2),
            "passed": kept_all >= KEPT_THRESHOLD and change >= MIN_CHANGE,
            "seconds": round(time.perf_counter() - started, 1), "results": rows}


def main(argv: list[str] | None = None) -> int:
    import torch

    from .. import load
    from ..postprocess.upscalers import LATENT_UPSCALE_MODES, TOY_UPSCALER

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="toy")
    p.add_argument("--upscaler", action="append", help="repeatable; default: every latent mode, Lanczos and the toy")
    p.add_argument("--per-combination", type=int, default=3, help="prompts per held-out triple (18 triples)")
    p.add_argument("--sampler", default="DPM++ 2M")
    p.add_argument("--scheduler", default="Karras")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    pipe = load(args.model)
    names = args.upscaler or [*LATENT_UPSCALE_MODES, "Lanczos", TOY_UPSCALER]
    results = []
    for name in names:
        r = run_hires_acceptance(pipe, name, per_combination=args.per_combination, sampler_name=args.sampler,
                                 scheduler=args.scheduler)
        print(f"{name:<30} kept {r['kept_all']:.3f} {r['kept']}  change {r['mean_change_levels']:.1f}  "
              f"{'PASS' if r['passed'] else 'FAIL'} ({r['seconds']} s)")
        results.append(r)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({"model": args.model, "thresholds": {"kept_all": KEPT_THRESHOLD, "mean_change_levels": MIN_CHANGE},
                       "runs": results}, f, indent=1)
    return 0 if all(r["passed"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
