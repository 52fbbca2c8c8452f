"""The OpenVINO backend on the toy export (conftest's controlled_export: the toy model with both toy
ControlNets): the same pictures as ONNX Runtime, the toy acceptance suite, ControlNet units, one
compiled model per input shapes, and errors that say what to change."""
import os

import numpy as np
import pytest
import torch

if os.environ.get("CI"):  # CI installs the openvino extra: a missing OpenVINO must fail there, not skip
    import openvino
else:
    openvino = pytest.importorskip("openvino")

import sdrt
from sdrt.backends.openvino_backend import OpenVinoBackend, cpu_has_bf16

GENERATION = dict(seed=5, steps=6, width=64, height=64, cfg_scale=5)


def _levels(a, b) -> int:
    return int(np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max())


@pytest.fixture(scope="module")
def folder(controlled_export):
    return str(controlled_export[0])


@pytest.fixture(scope="module")
def ov_pipe(folder):
    return sdrt.load(folder, backend="openvino", dtype="fp32")


@pytest.mark.parametrize("sampler_name", ["Euler a", "DPM++ 2M Karras"])
def test_openvino_fp32_gives_onnxruntimes_pictures(folder, ov_pipe, sampler_name):
    prompts = ["a large red circle in the top left", "a blue square at the bottom"]
    kw = dict(GENERATION, batch_size=2, sampler_name=sampler_name, clip_skip=2)
    want = sdrt.load(folder, backend="onnxruntime").txt2img(prompts, **kw)
    got = ov_pipe.txt2img(prompts, **kw)
    assert max(_levels(a, b) for a, b in zip(want.images, got.images)) <= 1  # measured: 0-1
    assert got.infotexts == want.infotexts


def test_toy_acceptance_passes_on_openvino_at_its_default_precision(folder):
    from sdrt.toy.acceptance import run_acceptance

    pipe = sdrt.load(folder, backend="openvino")
    assert pipe.backend.precision == ("bf16" if cpu_has_bf16(pipe.backend.core) else "f32")
    result = run_acceptance(pipe, sampler_name="DPM++ 2M Karras")
    assert result["passed"], result["accuracy"]


def test_controlnet_units_run_on_openvino(folder, ov_pipe):
    from PIL import Image

    hint = np.zeros((64, 64, 3), np.uint8)
    hint[8:28, 36:56] = (255, 0, 0)
    units = [{"model": "toy_canny", "module": "canny", "image": Image.fromarray(hint), "weight": 0.8},
             {"model": "toy_seg", "module": "none", "image": Image.fromarray(hint), "weight": 0.6,
              "guidance_end": 0.7, "control_mode": "ControlNet is more important"}]
    kw = dict(GENERATION, prompt="a red square", controlnet=units)
    want = sdrt.load("toy").txt2img(**kw)
    got = ov_pipe.txt2img(**kw)
    assert _levels(want.images[0], got.images[0]) <= 1
    assert got.infotexts == want.infotexts and "ControlNet 1:" in got.infotexts[0]


def test_one_compiled_model_per_input_shapes(folder):
    backend = OpenVinoBackend(folder, dtype=torch.float32, max_compiled=2)
    x, ctx = torch.randn(2, 4, 8, 8), torch.randn(2, 77, 64)
    t = torch.tensor([500.0])
    first = backend.unet_forward(x, t, ctx)
    assert len(backend.compiled["unet_controlled"]) == 1
    compiled = next(iter(backend.compiled["unet_controlled"].values()))
    assert torch.equal(backend.unet_forward(x, t, ctx), first)  # the same compiled model again
    assert next(iter(backend.compiled["unet_controlled"].values())) is compiled
    for size in (12, 8, 16):  # 8 used again after 12: 12 is then the least recently used, dropped for 16
        backend.unet_forward(torch.randn(2, 4, size, size), t, ctx)
    shapes = [dict(key)["sample"] for key in backend.compiled["unet_controlled"]]
    assert shapes == [(2, 4, 8, 8), (2, 4, 16, 16)]
    assert next(iter(backend.compiled["unet_controlled"].values())) is compiled


def test_bad_options_name_what_to_change(folder):
    with pytest.raises(ValueError, match=r"device='cuda'; the openvino backend runs on: cpu"):
        sdrt.load(folder, backend="openvino", device="cuda")
    with pytest.raises(ValueError, match=r"dtype=torch.float16; the openvino backend computes in fp32 or bf16"):
        sdrt.load(folder, backend="openvino", dtype="fp16")
    with pytest.raises(ValueError, match=r"dtype='half'; valid: fp32, fp16, bf16"):
        sdrt.load(folder, backend="openvino", dtype="half")
    with pytest.raises(ValueError, match=r"dtype=torch.bfloat16: the onnxruntime backend runs the export's own"):
        sdrt.load(folder, backend="onnxruntime", dtype="bf16")
    with pytest.raises(ValueError, match=r"the openvino backend runs an export folder"):
        sdrt.load("toy", backend="openvino")
    if cpu_has_bf16(openvino.Core()):
        assert sdrt.load(folder, backend="openvino", dtype="bf16").backend.precision == "bf16"
    else:
        with pytest.raises(ValueError, match=r"dtype=torch.bfloat16: this CPU has no bf16 arithmetic"):
            sdrt.load(folder, backend="openvino", dtype="bf16")


def test_cli_generates_on_openvino(folder, tmp_path):
    from sdrt.cli import main

    out = tmp_path / "ov.png"
    assert main(["txt2img", "a red circle", "--backend", "openvino", "--dtype", "fp32", "--model", folder,
                 "--steps", "4", "-o", str(out), "-q"]) == 0
    assert out.is_file()
