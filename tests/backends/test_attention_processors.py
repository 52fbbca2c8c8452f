"""The UNet on sdrt's attention: the processor and the torch custom op against SDPA, on the toy
UNet and a reduced SD 1.5-shaped one, the toy acceptance suite with it, and torch.compile capture."""
import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel

import sdrt
from sdrt.backends.attention import SdrtAttnProcessor, sdrt_attention, set_attention
from sdrt.models.architectures import ARCHITECTURES


def unet_out(unet, ctx_width, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, unet.config.in_channels, 16, 16, generator=g)
    ctx = torch.randn(2, 77, ctx_width, generator=g)
    with torch.no_grad():
        return unet(x, torch.tensor([900.0, 30.0]), ctx).sample


@pytest.mark.parametrize("which", ["toy", "sd15-shaped"])
def test_unet_on_sdrt_attention_matches_sdpa(which):
    if which == "toy":
        unet = sdrt.load("toy").unet
    else:
        torch.manual_seed(0)
        unet = UNet2DConditionModel(**{**ARCHITECTURES["sd1"].unet, "block_out_channels": [32, 64, 64, 64],
                                       "attention_head_dim": 2, "norm_num_groups": 8}).eval()
    width = unet.config.cross_attention_dim
    set_attention(unet, "sdpa")
    want = unet_out(unet, width)
    set_attention(unet, "sdrt")
    assert all(isinstance(p, SdrtAttnProcessor) for p in unet.attn_processors.values())
    got = unet_out(unet, width)
    assert ((got - want).abs().max() / want.abs().max()).item() < 1e-5


def test_toy_acceptance_passes_on_sdrt_attention():
    from sdrt.toy.acceptance import run_acceptance

    pipe = sdrt.load("toy", attention="sdrt")
    result = run_acceptance(pipe, sampler_name="DPM++ 2M Karras")
    assert result["passed"], result["accuracy"]


def test_custom_op_has_a_fake_and_compiles_without_graph_breaks():
    q, k, v = (torch.randn(2, 3, n, 16) for n in (10, 7, 7))
    torch.library.opcheck(sdrt_attention, (q, k, v, 0.25))  # schema, fake tensor and autograd registration checks
    compiled = torch.compile(lambda a, b, c: sdrt_attention(a, b, c, 0.25) * 2, backend="aot_eager", fullgraph=True)
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=0.25) * 2
    assert (compiled(q, k, v) - want).abs().max() < 1e-5


def test_bfloat16_cpu_runs_the_kernel_inside_the_op():
    q, k, v = (torch.randn(1, 2, n, 40).bfloat16() for n in (130, 200, 200))
    from sdrt import kernels

    got = sdrt_attention(q, k, v, 0.2)
    assert got.dtype == torch.bfloat16 and torch.equal(got, kernels.attention(q, k, v, scale=0.2))
    want = torch.nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double(), scale=0.2)
    assert (got.double() - want).abs().max() <= 2**-8 * want.abs().max()


def test_other_dtypes_fall_back_to_sdpa_inside_the_op():
    q, k, v = (torch.randn(1, 2, 5, 8, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(sdrt_attention(q, k, v, 0.5),
                               torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=0.5))


def test_unknown_attention_is_refused():
    with pytest.raises(ValueError, match="attention='flash'; valid: sdpa, sdrt"):
        sdrt.load("toy", attention="flash")


def test_cli_attention_flag(tmp_path):
    from sdrt.cli import main

    assert main(["txt2img", "a red circle", "--attention", "sdrt", "--steps", "3", "--seed", "1", "-q",
                 "-o", str(tmp_path / "a.png")]) == 0
    assert main(["txt2img", "a red circle", "--steps", "3", "--seed", "1", "-q", "-o", str(tmp_path / "b.png")]) == 0
    from PIL import Image

    a, b = (np.asarray(Image.open(tmp_path / f), dtype=int) for f in ("a.png", "b.png"))
    assert np.abs(a - b).max() <= 1  # the same picture, up to float rounding


def test_exports_trace_torch_attention_and_give_the_unet_back(tmp_path):
    pytest.importorskip("onnx")
    from sdrt.export.onnx_export import export_component

    pipe = sdrt.load("toy", attention="sdrt")
    export_component(pipe, "unet", str(tmp_path / "unet" / "model.onnx"))  # the custom op is not ONNX
    assert all(isinstance(p, SdrtAttnProcessor) for p in pipe.unet.attn_processors.values())
