"""The toy acceptance suite on the shipped weights: held-out prompts in, the right pictures out.

Thresholds (issue 3): colour >= 90%, position >= 85%, shape >= 70%, read by the deterministic
scorer. The measured accuracies are written to $SDRT_ACCEPTANCE_OUT (default:
build/toy_acceptance-<sampler>.json) so later changes can be compared with
bench/results/toy_acceptance.json.
"""
import json
import os

import pytest

import sdrt
from sdrt.toy.acceptance import THRESHOLDS, acceptance_prompts, run_acceptance


@pytest.fixture(scope="module")
def pipe():
    return sdrt.load("toy")


def test_prompts_are_held_out_and_enough():
    from sdrt.toy import data

    items = acceptance_prompts()
    assert len(items) >= 40
    held = data.held_out_combinations()
    assert all((it.spec.colour, it.spec.shape, it.spec.position) in held for it in items)
    assert len({it.prompt for it in items}) == len(items)


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M Karras"])
def test_acceptance(pipe, sampler):
    result = run_acceptance(pipe, sampler_name=sampler, steps=20, cfg_scale=7.0)
    out = os.environ.get("SDRT_ACCEPTANCE_OUT") or os.path.join("build", f"toy_acceptance-{sampler.replace(' ', '_')}.json")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    acc = result["accuracy"]
    print(f"{sampler}: {acc}")
    for key, minimum in THRESHOLDS.items():
        assert acc[key] >= minimum, f"{sampler}: {key} accuracy {acc[key]:.1%} < {minimum:.0%} ({out})"
