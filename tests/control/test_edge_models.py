"""The model-based edge / line-art preprocessors (softedge_hed, softedge_pidinet, lineart_realistic,
lineart_coarse, lineart_anime): parameter layout equal to the upstream networks, users' .pth files
in the upstream layouts loading through the annotator folder, missing files named, and outputs
equal to the upstream ControlNet 1.1 networks and detectors on the same random weights. The
upstream side is recorded in fixtures (tests/control/fixtures/make_annotator_fixtures.py, run with
a copy of the upstream code, wrote them): the key layouts (annotators/<network>.json) and, per
case, the upstream outputs (annotators/<case>.reference.safetensors) for weights and inputs that
are not stored but regenerated here from the recipe in the file's metadata. No upstream code is
needed here and nothing is skipped."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from sdrt.control.annotators import MissingAnnotatorError
from sdrt.control.preprocessors import hed, lineart, lineart_anime, pidinet
from sdrt.loaders.model_folders import ModelFolders

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ANNOTATOR_DIR = ("extensions", "sd-webui-controlnet", "annotator", "downloads")


def _plain(state):
    return state


def _pidinet_layout(state):  # table5_pidinet.pth: DataParallel keys under "state_dict"
    return {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 19}


def _module_prefixed(state):
    return {f"module.{k}": v for k, v in state.items()}


# fixture / network, sdrt network class, its preprocessors: (name, label, priority, file), subfolder, file layout
MODELS = {
    "hed": (hed.ControlNetHED, hed, [("hed", "softedge_hed", 0, "ControlNetHED.pth")], "hed", _plain),
    "pidinet": (pidinet.PiDiNet, pidinet, [("pidinet", "softedge_pidinet", 100, "table5_pidinet.pth")], "pidinet",
                _pidinet_layout),
    "lineart": (lineart.Generator, lineart, [("lineart", "lineart_realistic", 0, "sk_model.pth"),
                                             ("lineart_coarse", "lineart_coarse", 0, "sk_model2.pth")], "lineart",
                _plain),
    "lineart_anime": (lineart_anime.UnetGenerator, lineart_anime,
                      [("lineart_anime", "lineart_anime", 0, "netG.pth")], "lineart_anime", _module_prefixed),
}
TAGS = {"hed": ("SoftEdge",), "pidinet": ("SoftEdge",), "lineart": ("Lineart",), "lineart_anime": ("Lineart",)}
CASES = [(model, *entry) for model, spec in MODELS.items() for entry in spec[2]]


def _fixture_keys(model: str) -> dict[str, list[int]]:
    return json.loads((FIXTURES / "annotators" / f"{model}.json").read_text())["keys"]


def _random_state(model: str, seed: int) -> dict[str, torch.Tensor]:
    """Random tensors in the upstream key layout (taken from the fixture, not from sdrt's classes)."""
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=g) * 0.1 for k, shape in _fixture_keys(model).items()}


def _image(h=48, w=64, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("model", list(MODELS))
def test_parameter_layout_matches_upstream(model):
    with torch.device("meta"):
        net = MODELS[model][0]()
    ours = {k: list(v.shape) for k, v in net.state_dict().items()}
    assert ours == _fixture_keys(model)


@pytest.mark.parametrize("model,name,label,priority,filename", CASES)
def test_registry_entry(model, name, label, priority, filename):
    entry = next(p for p in MODELS[model][1].PREPROCESSORS if p.name == name)
    assert (entry.label, entry.priority, entry.tags) == (label, priority, TAGS[model])
    assert entry.slider_1 is None and entry.slider_2 is None and entry.uses_resolution
    assert [s.name for s in entry.sliders()] == ["Resolution"]


@pytest.mark.parametrize("model,name,label,priority,filename", CASES)
def test_runs_on_user_weights(model, name, label, priority, filename, tmp_path):
    _, module, _, subfolder, layout = MODELS[model]
    folder = tmp_path.joinpath(*ANNOTATOR_DIR, subfolder)
    folder.mkdir(parents=True)
    torch.save(layout(_random_state(model, seed=1)), folder / filename)
    entry = next(p for p in module.PREPROCESSORS if p.name == name)
    image = _image()
    out = entry.run(image, 64, 0.5, 0.5, rng=None, folders=ModelFolders(tmp_path))
    assert out.dtype == np.uint8 and out.shape == (64, 85, 3)  # short side 48 -> 64, 64 -> round(85.33)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], out[..., 2])
    again = entry.run(image, 64, 0.5, 0.5, rng=None, folders=ModelFolders(tmp_path))  # cached net
    assert np.array_equal(out, again)


@pytest.mark.parametrize("model,name,label,priority,filename", CASES)
def test_missing_file_names_file_and_folder(model, name, label, priority, filename, tmp_path):
    entry = next(p for p in MODELS[model][1].PREPROCESSORS if p.name == name)
    with pytest.raises(MissingAnnotatorError) as info:
        entry.run(_image(), 64, 0.5, 0.5, folders=ModelFolders(tmp_path))
    folder = os.path.join(str(tmp_path), *ANNOTATOR_DIR, MODELS[model][3])
    assert filename in str(info.value) and folder in str(info.value)


# ---- parity with the upstream code, through the recorded reference outputs ---------------------

# reference case -> sdrt's map function (the network is REFERENCE's recipe["network"])
MAPS = {"hed": hed.hed_edges, "pidinet": pidinet.pidinet_edges, "lineart": lineart.lineart_map,
        "lineart_coarse": lineart.lineart_map, "lineart_anime": lineart_anime.anime_lineart_map}
# The references are float16 (the upstream float32 outputs rounded): the 1e-4 relative tolerance
# of a float32 comparison plus float16's rounding, at most half an ulp = 2**-11 relative (2**-25
# absolute below 2**-14, inside the 1e-4 absolute), rounded up.
NET_ATOL, NET_RTOL = 1e-4, 6e-4


@pytest.fixture(scope="module")
def maker():
    """The fixture script, for its recipe functions (it imports no upstream code)."""
    spec = importlib.util.spec_from_file_location("make_annotator_fixtures", FIXTURES / "make_annotator_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _reference(maker, case: str) -> tuple[dict[str, torch.Tensor], dict]:
    with safe_open(str(maker.reference_path(case, FIXTURES / "annotators")), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, json.loads(f.metadata()["recipe"])


def _sdrt_net(maker, recipe: dict) -> torch.nn.Module:
    """sdrt's network with the recipe's regenerated weights (checked against the recorded digest)."""
    state = maker.recipe_state(_fixture_keys(recipe["network"]), recipe)
    assert maker.digest(state) == recipe["weights_sha256"], \
        "the recipe no longer regenerates the recorded weights (torch's random stream changed?)"
    net = MODELS[recipe["network"]][0]()
    net.load_state_dict(state, strict=True)
    return net.eval()


def test_every_case_has_a_reference(maker):
    assert set(maker.REFERENCES) == set(MAPS) == {"hed", "pidinet", "lineart", "lineart_coarse", "lineart_anime"}
    for case in MAPS:
        assert maker.reference_path(case, FIXTURES / "annotators").is_file(), case


@pytest.mark.parametrize("case", list(MAPS))
def test_network_matches_upstream(case, maker):
    """The network's output(s) (HED's five side projections, PiDiNet's fused edges, the line-art
    generators' map, the anime U-Net's tanh output) against the upstream network's."""
    ref, recipe = _reference(maker, case)
    net = _sdrt_net(maker, recipe)
    x = maker.network_input(recipe)
    assert maker.digest(x) == recipe["input_sha256"], "NumPy's random stream changed?"
    with torch.no_grad():
        got = net(x)
    got = list(got) if case == "hed" else [got]
    want = [ref[f"net.{i}"] for i in range(sum(k.startswith("net.") for k in ref))]
    assert len(got) == len(want) == (5 if case == "hed" else 1)
    for a, b in zip(got, want):
        assert b.dtype == torch.float16 and b.float().std() > 0
        assert a.shape == b.shape
        torch.testing.assert_close(a, b.float(), atol=NET_ATOL, rtol=NET_RTOL)


@pytest.mark.parametrize("case", list(MAPS))
def test_map_matches_upstream_detector(case, maker):
    """The whole map (pre-processing, network, post-processing) against the upstream detector's
    __call__ on a 64 x 96 image: at most 1 apart (float rounding before the uint8 truncation), and
    nearly everywhere equal."""
    ref, recipe = _reference(maker, case)
    net = _sdrt_net(maker, recipe)
    image = maker.map_image(recipe)
    assert maker.digest(image) == recipe["image_sha256"], "NumPy's random stream changed?"
    want = ref["map"].numpy()
    assert want.dtype == np.uint8 and len(np.unique(want)) >= 32  # an informative reference
    got = MAPS[case](net, image)
    assert got.shape == want.shape == image.shape[:2] and got.dtype == np.uint8
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
