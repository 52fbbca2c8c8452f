"""Core ML export (conversion runs on Linux; prediction needs macOS and is tested only there):
packages for the toy model and a reduced SD 1.5-shaped UNet, their I/O names and shapes, the
split-einsum attention, palettization and errors."""
import os
import sys

import numpy as np
import pytest
import torch

if os.environ.get("CI"):  # a test dependency: a missing coremltools fails in CI rather than skipping
    import coremltools as ct
else:
    ct = pytest.importorskip("coremltools")

import sdrt
from sdrt.export.coreml_export import SplitEinsumAttnProcessor, convert_component, to_coreml
from sdrt.export.specs import COMPONENTS


@pytest.fixture(scope="module")
def pipe():
    return sdrt.load("toy")


@pytest.fixture(scope="module")
def exported(pipe, tmp_path_factory):
    out = tmp_path_factory.mktemp("coreml")
    return str(out), to_coreml(pipe, str(out))


def test_toy_packages_have_the_shapes_the_runtime_is_given(exported):
    out, manifest = exported
    c = manifest["components"]
    assert c["unet"]["inputs"] == {"sample": [2, 4, 8, 8], "timestep": [2], "encoder_hidden_states": [2, 77, 64]}
    assert c["unet"]["outputs"] == {"out_sample": [2, 4, 8, 8]}
    assert c["text_encoder"]["inputs"] == {"inputs_embeds": [1, 77, 64]}
    assert c["text_encoder"]["outputs"] == {"hidden_states": [2, 1, 77, 64]}  # per layer, clip skip picks one
    assert c["vae_decoder"]["outputs"] == {"image": [1, 3, 64, 64]}
    for name in c:
        spec = ct.utils.load_spec(os.path.join(out, c[name]["file"]))
        assert spec.WhichOneof("Type") == "mlProgram"
        assert [i.name for i in spec.description.input] == [t.name for t in COMPONENTS[name].inputs]


def test_split_einsum_attention_computes_the_same_unet(pipe):
    module = COMPONENTS["unet"].wrap(pipe).eval()
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 4, 8, 8, generator=g), torch.tensor([100.0, 700.0]), torch.randn(2, 77, 64, generator=g))
    with torch.no_grad():
        want = module(*x)
        original = pipe.unet.attn_processors
        pipe.unet.set_attn_processor(SplitEinsumAttnProcessor())
        try:
            got = module(*x)
        finally:
            pipe.unet.set_attn_processor(original)
    assert (got - want).abs().max() < 1e-5


def test_split_einsum_and_palettized_unet_converts(pipe, tmp_path):
    model = convert_component(pipe, "unet", str(tmp_path / "unet.mlpackage"), attention="split_einsum",
                              palettize_bits=4)
    assert "split_einsum" in model.short_description
    spec = ct.utils.load_spec(str(tmp_path / "unet.mlpackage"))
    ops = {op.type for f in spec.mlProgram.functions.values() for block in f.block_specializations.values()
           for op in block.operations}
    assert "constexpr_lut_to_dense" in ops  # the palettized weights, unpacked at load time


def test_reduced_sd15_shaped_unet_converts_at_another_size(tmp_path):
    import types

    from diffusers import UNet2DConditionModel

    from sdrt.models.architectures import ARCHITECTURES

    torch.manual_seed(0)
    config = {**ARCHITECTURES["sd1"].unet, "block_out_channels": [32, 64, 64, 64], "attention_head_dim": 2,
              "norm_num_groups": 8, "sample_size": 8}  # SD 1.5's block structure and 768-wide context
    unet = UNet2DConditionModel(**config).eval()
    fake = types.SimpleNamespace(unet=unet, info=types.SimpleNamespace(default_size=64))
    model = convert_component(fake, "unet", str(tmp_path / "unet.mlpackage"), size=128)
    shapes = {i.name: list(i.type.multiArrayType.shape) for i in model.get_spec().description.input}
    assert shapes == {"sample": [2, 4, 16, 16], "timestep": [2], "encoder_hidden_states": [2, 77, 768]}


def test_bad_options_are_refused(pipe, tmp_path):
    with pytest.raises(ValueError, match="attention='flash'"):
        convert_component(pipe, "unet", str(tmp_path / "u.mlpackage"), attention="flash")
    with pytest.raises(ValueError, match="size=100"):
        convert_component(pipe, "unet", str(tmp_path / "u.mlpackage"), size=100)
    with pytest.raises(ValueError, match="palettize_bits=5"):
        convert_component(pipe, "vae_decoder", str(tmp_path / "v.mlpackage"), palettize_bits=5)
    with pytest.raises(ValueError, match="components: controlnet unknown"):
        to_coreml(pipe, str(tmp_path / "x"), components=["controlnet"])


@pytest.mark.skipif(sys.platform != "darwin", reason="running a Core ML package needs macOS (conversion is tested above)")
def test_coreml_unet_predicts_like_torch(exported, pipe):
    out, manifest = exported
    model = ct.models.MLModel(os.path.join(out, manifest["components"]["unet"]["file"]))
    x = (torch.randn(2, 4, 8, 8), torch.tensor([500.0, 500.0]), torch.randn(2, 77, 64))
    got = model.predict({"sample": x[0].numpy(), "timestep": x[1].numpy(), "encoder_hidden_states": x[2].numpy()})
    with torch.no_grad():
        want = COMPONENTS["unet"].wrap(pipe).eval()(*x).numpy()
    assert np.abs(got["out_sample"] - want).max() < 5e-2  # fp16 compute


def test_cli_export_to_coreml(tmp_path, capsys):
    from sdrt.cli import main

    assert main(["export", "toy", "--to", "coreml", "-o", str(tmp_path / "c"), "--size", "128"]) == 0
    assert "running them needs macOS" in capsys.readouterr().out
    spec = ct.utils.load_spec(str(tmp_path / "c" / "unet.mlpackage"))
    assert list(spec.description.input[0].type.multiArrayType.shape) == [2, 4, 16, 16]


@pytest.fixture(scope="module")
def controlled(pipe, tmp_path_factory):
    out = tmp_path_factory.mktemp("coreml_cn")
    return str(out), to_coreml(pipe, str(out), components=["unet"], controlnets=["toy_canny"])


def test_controlnet_packages_fit_the_controlled_unet(controlled):
    """`--controlnet`: the ControlNet's package gives exactly the residuals the UNet's package
    takes, at the UNet package's fixed shapes (batch 2, the toy's 64 px)."""
    out, manifest = controlled
    assert list(manifest["components"]) == ["unet_controlled"]
    control, unet = manifest["controlnets"]["toy_canny"], manifest["components"]["unet_controlled"]
    assert control["title"] == "toy_canny" and control["file"] == "controlnets/toy_canny.mlpackage"
    assert control["inputs"] == {"sample": [2, 4, 8, 8], "timestep": [2], "encoder_hidden_states": [2, 77, 64],
                                 "controlnet_cond": [2, 3, 64, 64], "conditioning_scale": [2]}
    residuals = {k: v for k, v in unet["inputs"].items() if k.startswith(("down_", "mid"))}
    assert residuals == control["outputs"] and len(residuals) == 5
    assert unet["outputs"] == {"out_sample": [2, 4, 8, 8]}
    assert os.path.isdir(os.path.join(out, control["file"])) and os.path.isdir(os.path.join(out, unet["file"]))


@pytest.mark.skipif(sys.platform != "darwin", reason="running a Core ML package needs macOS (conversion is tested above)")
def test_coreml_controlnet_chain_predicts_like_torch(controlled, pipe):
    from sdrt.control import load_controlnet

    out, manifest = controlled
    control = ct.models.MLModel(os.path.join(out, manifest["controlnets"]["toy_canny"]["file"]))
    unet = ct.models.MLModel(os.path.join(out, manifest["components"]["unet_controlled"]["file"]))
    x, t, ctx = torch.randn(2, 4, 8, 8), torch.tensor([500.0, 500.0]), torch.randn(2, 77, 64)
    hint = torch.rand(2, 3, 64, 64)
    residuals = control.predict({"sample": x.numpy(), "timestep": t.numpy(), "encoder_hidden_states": ctx.numpy(),
                                 "controlnet_cond": hint.numpy(), "conditioning_scale": np.ones(2, np.float32)})
    got = unet.predict({"sample": x.numpy(), "timestep": t.numpy(), "encoder_hidden_states": ctx.numpy(), **residuals})
    with torch.no_grad():
        down, mid = load_controlnet("toy_canny")(x, t, ctx, hint, return_dict=False)
        want = pipe.unet(x, t, ctx, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
    assert np.abs(got["out_sample"] - want.numpy()).max() < 5e-2  # fp16 compute
