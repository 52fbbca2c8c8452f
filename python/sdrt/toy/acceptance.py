"""The toy acceptance suite: generate from held-out prompts and read the pictures back.

Every prompt names a (colour, shape, position) combination that never occurred in training
(data.held_out_combinations), in the training captions' phrasings. The scorer checks colour, shape
and position, plus size and background where the prompt names them. Every backend, export and
sampler is held to the same thresholds.

    python -m sdrt.toy.acceptance [--sampler "Euler a"] [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from typing import Optional

from . import data, scorer

THRESHOLDS = {"colour": 0.90, "position": 0.85, "shape": 0.70}
# Templates that name the position (the held-out combination includes it).
_STYLES = (0, 1, 2, 3)
BASE_SEED = 1000


@dataclass(frozen=True)
class AcceptancePrompt:
    prompt: str
    spec: data.ShapeSpec
    background: str
    names_size: bool
    names_background: bool
    seed: int


def acceptance_prompts(per_combination: int = 3) -> list[AcceptancePrompt]:
    """`per_combination` prompts for each held-out triple (18 triples -> 54 prompts by default)."""
    prompts = []
    backgrounds = list(data.BACKGROUNDS)
    for k, (colour, shape, position) in enumerate(sorted(data.held_out_combinations())):
        for j in range(per_combination):
            size = data.SIZES[(k + j) % len(data.SIZES)]
            background = backgrounds[(k + j) % len(backgrounds)]
            style = _STYLES[(k + j) % len(_STYLES)]
            spec = data.ShapeSpec(shape, colour, size, position)
            template = data.ONE_SHAPE_TEMPLATES[style]
            prompts.append(AcceptancePrompt(data.caption(data.scene_from(spec, background), style), spec, background,
                                            "{size}" in template, "{background}" in template,
                                            BASE_SEED + len(prompts)))
    return prompts


def run_acceptance(pipe, *, sampler_name: str = "Euler a", scheduler: str = "Automatic", steps: int = 20,
                   cfg_scale: float = 5.0, batch: int = 16, save_dir: Optional[str] = None) -> dict:
    """Generate every acceptance prompt with `pipe` and score it; returns accuracies and per-prompt results."""
    import numpy as np

    items = acceptance_prompts()
    rows = []
    started = time.perf_counter()
    for start in range(0, len(items), batch):
        chunk = items[start:start + batch]
        # One seed per prompt: a batch of distinct prompts with consecutive seeds (seed + i).
        result = pipe.txt2img([it.prompt for it in chunk], steps=steps, sampler_name=sampler_name,
                              scheduler=scheduler, cfg_scale=cfg_scale, seed=chunk[0].seed, batch_size=len(chunk))
        for it, image, seed in zip(chunk, result.images, result.seeds):
            checks = scorer.check(np.asarray(image), it.spec, it.background if it.names_background else None)
            if not it.names_size:
                checks.pop("size", None)
            rows.append({"prompt": it.prompt, "seed": seed, **checks})
            if save_dir:
                image.save(f"{save_dir}/{len(rows) - 1:03d}.png")
    keys = ("colour", "shape", "position", "size", "background")
    accuracy = {k: round(sum(r[k] for r in rows if k in r) / max(1, sum(k in r for r in rows)), 4) for k in keys}
    return {
        "sampler": sampler_name, "scheduler": scheduler, "steps": steps, "cfg_scale": cfg_scale,
        "prompts": len(rows), "accuracy": accuracy, "thresholds": THRESHOLDS,
        "passed": all(accuracy[k] >= v for k, v in THRESHOLDS.items()),
        "seconds": round(time.perf_counter() - started, 1), "results": rows,
    }


def main(argv: list[str] | None = None) -> int:
    from .. import load
    from ..backends.compiled_unet import COMPILE_MODES
    from ..loading import BACKENDS, DTYPE_NAMES

    p = argparse.ArgumentParser(prog="python -m sdrt.toy.acceptance", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="toy", help="'toy', 'toy-xl', a model, or an export folder with --backend")
    p.add_argument("--backend", default="torch", choices=BACKENDS)
    p.add_argument("--dtype", default=None, choices=list(DTYPE_NAMES), help="default: the backend's")
    p.add_argument("--device", default="cpu", help="cpu or cuda (fp16 there, fp32 on CPU)")
    p.add_argument("--compile", default="off", choices=list(COMPILE_MODES), help="torch backend: the UNet's compile mode")
    p.add_argument("--sampler", action="append", help="repeatable; default: 'Euler a', 'DPM++ 2M Karras' and 'DDIM'")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg-scale", type=float, default=5.0)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--save-images", default=None, help="folder to save the generated images in")
    args = p.parse_args(argv)
    torch_only = {"compile": args.compile} if args.compile != "off" else {}
    pipe = load(args.model, backend=args.backend, device=args.device, dtype=args.dtype, **torch_only)
    runs = [run_acceptance(pipe, sampler_name=s, steps=args.steps, cfg_scale=args.cfg_scale, save_dir=args.save_images)
            for s in (args.sampler or ["Euler a", "DPM++ 2M Karras", "DDIM"])]
    for r in runs:
        print(f"{r['sampler']:<18} {r['prompts']} prompts  " +
              "  ".join(f"{k} {v:.1%}" for k, v in r["accuracy"].items()) + f"  {'PASS' if r['passed'] else 'FAIL'}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({"model": args.model, "backend": args.backend, "device": args.device, "dtype": args.dtype,
                       "compile": args.compile, "runs": runs}, f, indent=2)
    return 0 if all(r["passed"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
