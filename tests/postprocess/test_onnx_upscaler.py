"""ONNX: sdrt's upscalers export to ONNX and run on ONNX Runtime with the torch module's contract
and numbers (tolerance: max |ORT - torch| <= 1e-4 on [0, 1] pixels, fp32 both sides)."""
from __future__ import annotations

import pytest
import torch
from published_upscalers import random_weights, realesrgan_rrdbnet, srvgg_compact

from sdrt.postprocess import build_upscaler, detect_layout, export_upscaler_onnx, load_upscaler_file, upscale_tiled

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def toy_onnx(toy_upscaler, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "ToyESRGAN_2x.onnx"
    export_upscaler_onnx(toy_upscaler, path)
    return path


def test_toy_upscaler_on_onnxruntime(toy_upscaler, toy_onnx, toy_pixels):
    model = load_upscaler_file(toy_onnx)
    assert (model.layout, model.scale, model.size_multiple, model.source_layout) == ("ONNX", 2, 1, "RRDBNet")
    x = toy_pixels(2, 64, seed=11)[..., :61, :58]
    with torch.no_grad():
        want = toy_upscaler(x)
    got = model(x)
    assert got.shape == want.shape == (2, 3, 122, 116) and got.dtype == torch.float32
    assert (got - want).abs().max().item() <= TOLERANCE


def test_tiled_onnx_equals_tiled_torch(toy_upscaler, toy_onnx, toy_pixels):
    x = toy_pixels(1, 96, seed=12)
    a = upscale_tiled(load_upscaler_file(toy_onnx), x, tile=48, overlap=8)
    b = upscale_tiled(toy_upscaler, x, tile=48, overlap=8)
    assert (a - b).abs().max().item() <= TOLERANCE


def test_dynamic_axes_and_metadata(toy_onnx):
    proto = onnx.load(str(toy_onnx))
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert [proto.graph.input[0].name, proto.graph.output[0].name] == ["image", "upscaled"]
    assert dims == ["batch", 3, "height", "width"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["sdrt.upscaler.scale"] == "2" and meta["sdrt.upscaler.size_multiple"] == "1"


def test_pixel_unshuffle_net_pads_outside_the_graph(tmp_path):
    """Real-ESRGAN x2plus-style nets: the graph takes even sides; the wrapper reflect-pads odd
    inputs and crops, exactly as the torch module does."""
    model = build_upscaler(detect_layout(random_weights(realesrgan_rrdbnet(1, in_ch=12, nf=16, gc=8), seed=3)))
    loaded = load_upscaler_file(export_upscaler_onnx(model, tmp_path / "x2.onnx"))
    assert (loaded.scale, loaded.size_multiple) == (2, 2)
    x = torch.rand(2, 3, 13, 10)
    with torch.no_grad():
        want = model(x)
    got = loaded(x)
    assert got.shape == want.shape == (2, 3, 26, 20)
    assert (got - want).abs().max().item() <= TOLERANCE


def test_srvgg_export_and_foreign_file_without_metadata(tmp_path):
    """PReLU and pixel shuffle export; a .onnx made elsewhere (no sdrt metadata) gets its scale by
    running a tiny input."""
    model = build_upscaler(detect_layout(random_weights(srvgg_compact(3, nf=16, scale=3), seed=2)))
    path = tmp_path / "compact.onnx"
    export_upscaler_onnx(model, path)
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    onnx.save(proto, str(path))
    loaded = load_upscaler_file(path)
    assert (loaded.scale, loaded.size_multiple, loaded.source_layout) == (3, 1, None)
    x = torch.rand(3, 3, 13, 10)
    with torch.no_grad():
        assert (loaded(x) - model(x)).abs().max().item() <= TOLERANCE


def test_export_refuses_other_modules(tmp_path):
    with pytest.raises(TypeError, match="not an sdrt upscaler network"):
        export_upscaler_onnx(torch.nn.Conv2d(3, 3, 1), tmp_path / "x.onnx")
