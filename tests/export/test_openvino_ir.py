"""OpenVINO IR beside the ONNX graphs (`to_onnx(..., openvino_ir=True)`, `sdrt export --openvino-ir`):
the IR keeps attention as OpenVINO's fused op, the openvino backend prefers it, and it gives torch's
pictures (ControlNet units included) and passes the toy acceptance suite."""
import json
import os

import numpy as np
import pytest

if os.environ.get("CI"):  # CI installs the openvino extra: a missing OpenVINO must fail there, not skip
    import openvino  # noqa: F401
else:
    pytest.importorskip("openvino")

import sdrt

GENERATION = dict(seed=3, steps=6, width=64, height=64, cfg_scale=5, sampler_name="DPM++ 2M Karras")


@pytest.fixture(scope="module")
def ir_export(tmp_path_factory):
    from sdrt.export import to_onnx

    out = str(tmp_path_factory.mktemp("toy_ir_export"))
    return out, to_onnx(sdrt.load("toy"), out, controlnets=["toy_seg"], openvino_ir=True)


def test_each_graph_has_an_ir_that_the_backend_prefers(ir_export):
    folder, manifest = ir_export
    entries = {**manifest["components"], **manifest["controlnets"]}
    assert set(entries) == {"text_encoder", "unet_controlled", "vae_decoder", "vae_encoder", "toy_seg"}
    for name, entry in entries.items():
        assert entry["openvino_file"].endswith("openvino.xml"), name
        assert os.path.isfile(os.path.join(folder, entry["openvino_file"][:-4] + ".bin")), name
        assert entry["openvino_parity_max_abs_error"] < 1e-4, (name, entry)
    backend = sdrt.load(folder, backend="openvino", dtype="fp32").backend
    assert all(path.endswith("openvino.xml") for path in backend.paths.values()), backend.paths
    with open(os.path.join(folder, manifest["components"]["unet_controlled"]["openvino_file"]), encoding="utf-8") as f:
        fused = f.read().count('type="ScaledDotProductAttention"')
    assert fused == 8  # the toy UNet's 4 transformer blocks x (self, cross); ONNX spells them out


def test_ir_gives_torchs_pictures_with_a_controlnet_unit(ir_export):
    hint = np.zeros((64, 64, 3), np.uint8)
    hint[8:30, 34:56] = (255, 0, 0)
    unit = [{"model": "toy_seg", "module": "none", "image": hint, "weight": 0.8}]
    prompt = "a large red circle in the top right"
    want = sdrt.load("toy").txt2img(prompt, controlnet=unit, **GENERATION)
    got = sdrt.load(ir_export[0], backend="openvino", dtype="fp32").txt2img(prompt, controlnet=unit, **GENERATION)
    assert np.abs(np.asarray(got.images[0], int) - np.asarray(want.images[0], int)).max() <= 1


def test_toy_acceptance_passes_on_the_ir(ir_export):
    from sdrt.toy.acceptance import run_acceptance

    result = run_acceptance(sdrt.load(ir_export[0], backend="openvino"), sampler_name="Euler a")
    assert result["passed"], result["accuracy"]


def test_same_export_again_is_a_noop_and_the_cli_flag_is_onnx_only(ir_export, tmp_path):
    from sdrt.cli import main
    from sdrt.export import to_onnx

    folder, manifest = ir_export
    messages = []
    again = to_onnx(sdrt.load("toy"), folder, controlnets=["toy_seg"], openvino_ir=True, progress=messages.append)
    assert messages == ["unchanged since the last export (same weights and options): nothing to do"]
    assert again["content_hash"] == manifest["content_hash"]
    with open(os.path.join(folder, "sdrt_export.json"), encoding="utf-8") as f:
        assert json.load(f)["components"]["unet_controlled"]["openvino_file"] == "unet_controlled/openvino.xml"
    assert main(["export", "toy", "--to", "coreml", "--openvino-ir", "-o", str(tmp_path / "x")]) == 2


def test_exporting_again_without_the_ir_keeps_the_onnx_graph(tmp_path):
    from sdrt.export import to_onnx

    pipe, out = sdrt.load("toy"), str(tmp_path / "export")
    to_onnx(pipe, out, components=["vae_decoder"], openvino_ir=True)
    assert os.path.isfile(os.path.join(out, "vae_decoder", "openvino.xml"))
    manifest = to_onnx(pipe, out, components=["vae_decoder"])
    assert "openvino_file" not in manifest["components"]["vae_decoder"]
    assert sorted(os.listdir(os.path.join(out, "vae_decoder"))) == ["model.onnx"]
    backend = sdrt.load(out, backend="openvino", dtype="fp32").backend
    assert backend.paths["vae_decoder"].endswith("model.onnx")
