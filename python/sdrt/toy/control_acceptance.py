"""The toy ControlNet acceptance: does the control image decide where the shape goes?

For every held-out (colour, shape, position) triple (data.held_out_combinations; never seen in
training) the control image is that scene (canny: its edges via the canny module; seg: its
segmentation map, module "none"), and:

- placement: the prompt names colour and shape only -> the shape must land at the control's
  position (>= 85%);
- override: the prompt names another position P1 while the control shows P2 -> with
  guidance_end 1.0 the shape lands at P2 (>= 85%); with guidance_end 0.2 the prompt gets its way
  in at least 30 points more cases than with 1.0;
- weight 0: the picture is byte for byte the one without ControlNet.

    python -m sdrt.toy.control_acceptance --controlnet toy_canny --out results.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass

import numpy as np

from . import data, scorer

THRESHOLDS = {"placement": 0.85, "override_end_1.0": 0.85, "prompt_gain_end_0.2": 0.30}
BASE_SEED = 5000
PER_CASE = 3  # seeds per held-out triple (one batch)


@dataclass(frozen=True)
class ControlCase:
    spec: data.ShapeSpec      # what the control image shows
    background: str
    prompt_position: str      # P1 of the override prompt (never the control's position)
    seed: int


def control_cases() -> list[ControlCase]:
    cases = []
    backgrounds = list(data.BACKGROUNDS)
    for k, (colour, shape, position) in enumerate(sorted(data.held_out_combinations())):
        others = [p for p in data.POSITIONS if p != position]
        spec = data.ShapeSpec(shape, colour, data.SIZES[k % 2], position)
        cases.append(ControlCase(spec, backgrounds[k % len(backgrounds)], others[k % len(others)],
                                 BASE_SEED + PER_CASE * k))
    return cases


def control_unit(kind: str, model: str, case: ControlCase, **fields) -> dict:
    scene = data.scene_from(case.spec, case.background)
    if kind == "seg":
        return {"module": "none", "model": model, "image": data.segmentation_map(scene), **fields}
    return {"module": "canny", "model": model, "image": data.render(scene), "pixel_perfect": True, **fields}


def _generate(pipe, prompt: str, case: ControlCase, unit, steps: int, cfg_scale: float, sampler: str) -> list:
    result = pipe.txt2img(prompt, seed=case.seed, batch_size=PER_CASE, steps=steps, cfg_scale=cfg_scale,
                          sampler_name=sampler, controlnet=[unit] if unit else [])
    return [np.asarray(im) for im in result.images]


def run_control_acceptance(pipe, kind: str, model: str, *, steps: int = 20, cfg_scale: float = 5.0,
                           sampler: str = "Euler a", cases=None) -> dict:
    """`cases`: a subset of control_cases() (default: all 18 held-out triples, 3 seeds each)."""
    started, rows = time.perf_counter(), []
    for case in cases if cases is not None else control_cases():
        colour, shape = case.spec.colour, case.spec.shape
        at_p1 = data.ShapeSpec(shape, colour, case.spec.size, case.prompt_position)
        placed = _generate(pipe, f"a {colour} {shape}", case, control_unit(kind, model, case), steps, cfg_scale, sampler)
        override = f"a {colour} {shape} in the {case.prompt_position}"
        full = _generate(pipe, override, case, control_unit(kind, model, case), steps, cfg_scale, sampler)
        short = _generate(pipe, override, case, control_unit(kind, model, case, guidance_end=0.2), steps, cfg_scale,
                          sampler)
        for i in range(PER_CASE):
            rows.append({"seed": case.seed + i, "control": [colour, shape, case.spec.position],
                         "prompt_position": case.prompt_position,
                         "placement": scorer.check(placed[i], case.spec)["position"],
                         "end_1.0_at_control": scorer.check(full[i], case.spec)["position"],
                         "end_1.0_at_prompt": scorer.check(full[i], at_p1)["position"],
                         "end_0.2_at_prompt": scorer.check(short[i], at_p1)["position"]})
    rate = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in rows[0] if k.startswith(("placement", "end_"))}
    measured = {"placement": rate["placement"], "override_end_1.0": rate["end_1.0_at_control"],
                "prompt_gain_end_0.2": round(rate["end_0.2_at_prompt"] - rate["end_1.0_at_prompt"], 4)}
    return {"kind": kind, "controlnet": model, "sampler": sampler, "steps": steps, "cfg_scale": cfg_scale,
            "cases": len(rows), "rates": rate, "measured": measured, "thresholds": THRESHOLDS,
            "weight_0_identical": weight_zero_identical(pipe, kind, model, steps, cfg_scale, sampler),
            "passed": all(measured[k] >= v for k, v in THRESHOLDS.items()),
            "seconds": round(time.perf_counter() - started, 1), "results": rows}


def weight_zero_identical(pipe, kind: str, model: str, steps: int, cfg_scale: float, sampler: str) -> bool:
    case = control_cases()[0]
    prompt = f"a {case.spec.colour} {case.spec.shape}"
    plain = _generate(pipe, prompt, case, None, steps, cfg_scale, sampler)
    zero = _generate(pipe, prompt, case, control_unit(kind, model, case, weight=0.0), steps, cfg_scale, sampler)
    return all((a == b).all() for a, b in zip(plain, zero))


def main(argv: list[str] | None = None) -> int:
    from .. import load

    p = argparse.ArgumentParser(prog="python -m sdrt.toy.control_acceptance", description=__doc__.splitlines()[0])
    p.add_argument("--controlnet", action="append", help="repeatable; default: toy_canny and toy_seg")
    p.add_argument("--model", default="toy")
    p.add_argument("--sampler", default="Euler a")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    pipe = load(args.model)
    runs, subset_runs = [], []
    for name in args.controlnet or ["toy_canny", "toy_seg"]:
        kind = "seg" if "seg" in name.lower() else "canny"
        runs.append(run_control_acceptance(pipe, kind, name, steps=args.steps, sampler=args.sampler))
        # the subset the CI test runs (tests/toy/test_toy_controlnets.py): every third triple
        subset_runs.append(run_control_acceptance(pipe, kind, name, steps=args.steps, sampler=args.sampler,
                                                  cases=control_cases()[::3]))
        for label, r in (("", runs[-1]), (" (CI subset)", subset_runs[-1])):
            print(f"{name + label:<24} " + "  ".join(f"{k} {v:.1%}" for k, v in r["measured"].items())
                  + f"  weight 0 identical: {r['weight_0_identical']}  {'PASS' if r['passed'] else 'FAIL'}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({"model": args.model, "runs": runs, "subset_runs": subset_runs}, f, indent=2)
    return 0 if all(r["passed"] and r["weight_0_identical"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
