"""The shipped toy ControlNets (toy_canny, toy_seg): loadable by name with no models folder, and
their acceptance (sdrt.toy.control_acceptance) on held-out triples.

CI runs every third held-out triple (6 of 18, 18 pictures per measure) and holds each measure to
the value recorded for that subset (bench/results/toy_controlnet_acceptance.json, written by
`python -m sdrt.toy.control_acceptance`) minus two pictures; the full suite is the slow test, held
to the recorded full values minus the same margin. Weight 0 must give the picture without
ControlNet byte for byte."""
import json
import os

import pytest

import sdrt
from sdrt.control import SHIPPED_CONTROLNETS, load_controlnet
from sdrt.toy.control_acceptance import control_cases, run_control_acceptance

RECORD = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "results", "toy_controlnet_acceptance.json")
MARGIN = 2 / 18  # two pictures of the CI subset


@pytest.fixture(scope="module")
def pipe():
    return sdrt.load("toy")


def recorded(name: str, subset: bool) -> dict:
    with open(RECORD, encoding="utf-8") as f:
        runs = json.load(f)["subset_runs" if subset else "runs"]
    return next(r for r in runs if r["controlnet"] == name)["measured"]


def test_shipped_names_load_without_a_models_folder(monkeypatch):
    monkeypatch.delenv("SDRT_MODELS_ROOT", raising=False)
    for name in SHIPPED_CONTROLNETS:
        controlnet = load_controlnet(name)
        assert controlnet.config.cross_attention_dim == 64 and len(controlnet.controlnet_down_blocks) == 4
        assert sum(p.numel() for p in controlnet.parameters()) < 1.2e6


def _check(result: dict, floors: dict) -> None:
    assert result["weight_0_identical"]
    for key, value in floors.items():
        assert result["measured"][key] >= value - MARGIN, f"{key}: {result['measured'][key]:.1%} < {value:.1%} - margin"


@pytest.mark.parametrize("name,kind", [("toy_canny", "canny"), ("toy_seg", "seg")])
def test_toy_controlnet_places_the_shape(pipe, name, kind):
    result = run_control_acceptance(pipe, kind, name, cases=control_cases()[::3])
    _check(result, recorded(name, subset=True))


@pytest.mark.slow
@pytest.mark.parametrize("name,kind", [("toy_canny", "canny"), ("toy_seg", "seg")])
def test_toy_controlnet_full_acceptance(pipe, name, kind):
    _check(run_control_acceptance(pipe, kind, name), recorded(name, subset=False))
