"""Every published upscaler key layout loads from .pth (bare and wrapped as Real-ESRGAN saves them)
and .safetensors with random weights in its exact key names and shapes, with the right layout,
hyper-parameters, scale and output shape; every tensor of the file lands in the network."""
from __future__ import annotations

import sys

import pytest
import torch
from published_upscalers import (
    PUBLISHED,
    esrgan_old_arch,
    esrgan_rrdb_trunk,
    random_weights,
    realesrgan_rrdbnet,
    srvgg_compact,
)
from safetensors.torch import save_file

from sdrt.postprocess import detect_layout, load_upscaler_file

CONTAINERS = ["pth", "pth params_ema", "safetensors"]


def write(tmp_path, name: str, sd: dict, container: str):
    if container == "safetensors":
        path = tmp_path / f"{name}.safetensors"
        save_file(sd, str(path))
    else:
        path = tmp_path / f"{name}.pth"
        torch.save({"params_ema": sd} if "params_ema" in container else sd, path)
    return path


@pytest.fixture(scope="module")
def published_weights():
    return {name: random_weights(make(), seed=i) for i, (name, (make, _, _)) in enumerate(PUBLISHED.items())}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_layout_loads_and_runs(tmp_path, published_weights, name):
    _, layout, scale = PUBLISHED[name]
    sd = published_weights[name]
    loaded = []
    for container in CONTAINERS:
        path = write(tmp_path, f"{name}-{container.replace(' ', '-')}", sd, container)
        model = load_upscaler_file(path)
        assert (model.layout, model.scale, model.name) == (layout, scale, path.stem), container
        weights = list(model.parameters())
        assert sum(p.numel() for p in weights) == sum(t.numel() for t in sd.values())
        assert all(p.dtype == torch.float32 and not p.requires_grad for p in weights)
        loaded.append(model.state_dict())
    assert all(torch.equal(loaded[0][k], other[k]) for other in loaded[1:] for k in loaded[0])
    with torch.no_grad():
        out = model(torch.rand(1, 3, 8, 12, generator=torch.Generator().manual_seed(0)))
    assert out.shape == (1, 3, 8 * scale, 12 * scale)
    assert torch.isfinite(out).all()


def test_hyperparameters_from_shapes():
    cases = {
        "x4plus": (realesrgan_rrdbnet(23), dict(num_block=23, num_grow_ch=32, num_feat=64, unshuffle=1,
                                                num_upsample=2, num_in_ch=3)),
        "x2plus": (realesrgan_rrdbnet(23, in_ch=12), dict(unshuffle=2, num_in_ch=3, num_upsample=2)),
        "x1 (unshuffle 4)": (realesrgan_rrdbnet(2, in_ch=48), dict(unshuffle=4, num_in_ch=3, num_block=2)),
        "anime_6B": (realesrgan_rrdbnet(6), dict(num_block=6)),
        "old 4x": (esrgan_old_arch(4, 3), dict(num_block=3, num_upsample=2, unshuffle=1)),
        "old 2x": (esrgan_old_arch(2, 2), dict(num_block=2, num_upsample=1)),
        "old 1x": (esrgan_old_arch(1, 2), dict(num_upsample=0)),
        "old 8x": (esrgan_old_arch(8, 1, nf=16), dict(num_upsample=3, num_feat=16)),
        "general-x4v3": (srvgg_compact(32), dict(num_conv=32, num_feat=64, upscale=4)),
        "animevideov3": (srvgg_compact(16), dict(num_conv=16, upscale=4)),
        "compact 2x": (srvgg_compact(4, nf=16, scale=2), dict(num_conv=4, num_feat=16, upscale=2)),
    }
    for name, (shapes, expected) in cases.items():
        spec = detect_layout({k: torch.empty(s) for k, s in shapes.items()})
        assert {k: spec.params[k] for k in expected} == expected, name


@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_old_arch_scales(tmp_path, scale):
    sd = random_weights(esrgan_old_arch(scale, num_block=1, nf=16))
    model = load_upscaler_file(write(tmp_path, f"old{scale}", sd, "pth"))
    assert (model.layout, model.scale) == ("ESRGAN (old arch)", scale)
    assert model(torch.rand(2, 3, 5, 7)).shape == (2, 3, 5 * scale, 7 * scale)


def test_rrdb_trunk_layout_and_data_parallel_prefix(tmp_path):
    sd = random_weights(esrgan_rrdb_trunk(num_block=2))
    model = load_upscaler_file(write(tmp_path, "trunk", {f"module.{k}": v for k, v in sd.items()}, "pth"))
    assert (model.layout, model.scale, model.hyperparameters["num_block"]) == ("ESRGAN (RRDB_trunk)", 4, 2)
    assert torch.equal(model.conv_hr.weight, sd["HRconv.weight"])


def test_params_ema_is_preferred_over_params(tmp_path):
    ema, plain = (random_weights(srvgg_compact(2, nf=8), seed=s) for s in (1, 2))
    path = tmp_path / "both.pth"
    torch.save({"params": plain, "params_ema": ema}, path)
    assert torch.equal(load_upscaler_file(path).body[0].weight, ema["body.0.weight"])
    torch.save({"params": plain}, path)
    assert torch.equal(load_upscaler_file(path).body[0].weight, plain["body.0.weight"])


def test_odd_sizes_with_pixel_unshuffle(tmp_path):
    """x2plus pads odd sides by reflection before unshuffling and crops the output back."""
    model = load_upscaler_file(write(tmp_path, "x2", random_weights(realesrgan_rrdbnet(1, in_ch=12)), "pth"))
    assert (model.scale, model.size_multiple) == (2, 2)
    assert model(torch.rand(1, 3, 9, 6)).shape == (1, 3, 18, 12)
    assert model(torch.rand(1, 3, 1, 1)).shape == (1, 3, 2, 2)


def test_dtype_and_fp16_file(tmp_path):
    sd = {k: v.half() for k, v in random_weights(srvgg_compact(2, nf=8)).items()}
    path = write(tmp_path, "half", sd, "safetensors")
    assert next(load_upscaler_file(path).parameters()).dtype == torch.float32  # default: float32
    model = load_upscaler_file(path, dtype=torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16
    assert model(torch.rand(1, 3, 4, 4, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_import_does_not_load_onnxruntime(monkeypatch):
    """Importing sdrt.postprocess and resolving its torch-side names never imports onnx or
    onnxruntime (fresh imports, with both made unimportable)."""
    import importlib

    import sdrt

    monkeypatch.setattr(sdrt, "postprocess", sdrt.postprocess, raising=False)
    for name in [m for m in sys.modules if m == "sdrt.postprocess" or m.startswith("sdrt.postprocess.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # None in sys.modules: import raises
    monkeypatch.setitem(sys.modules, "onnx", None)
    fresh = importlib.import_module("sdrt.postprocess")
    assert callable(fresh.load_upscaler_file) and callable(fresh.upscale_tiled) and fresh.LAYOUTS
