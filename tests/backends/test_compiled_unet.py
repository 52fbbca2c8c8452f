"""The torch backend's compiled UNet (backends/compiled_unet.py): torch.compile on the CPU against
eager on a small random SD-shaped UNet, in-place weight patches reaching the compiled graph, the
options each mode passes, and the refusals."""
import pytest
import torch
from diffusers import UNet2DConditionModel

import sdrt
from sdrt.backends.compiled_unet import COMPILE_MODES, inductor_options
from sdrt.backends.torch_backend import TorchBackend
from sdrt.models.architectures import ARCHITECTURES


def small_unet():
    torch.manual_seed(0)
    return UNet2DConditionModel(**{**ARCHITECTURES["sd1"].unet, "block_out_channels": [16, 32, 32, 32],
                                   "attention_head_dim": 2, "norm_num_groups": 8, "cross_attention_dim": 32,
                                   "layers_per_block": 1}).eval()


def inputs(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 4, 16, 16, generator=g), torch.tensor([900.0, 30.0]), torch.randn(2, 77, 32, generator=g)


def rel_err(got, want):
    return ((got - want).norm() / want.norm()).item()


class _Stub(torch.nn.Module):  # the backend's text encoder / VAE, never called here
    pass


def test_compiled_unet_matches_eager_and_sees_in_place_weight_patches():
    unet = small_unet()
    compiled = TorchBackend(unet, _Stub(), _Stub(), compile_mode="default")
    assert compiled.unet is unet  # job-scoped patches (LoRA) address the module itself
    for seed in (1, 2):  # the second call runs the cached graph
        x, t, ctx = inputs(seed)
        with torch.no_grad():
            want = unet(x, t, ctx).sample
        assert rel_err(compiled.unet_forward(x, t, ctx), want) < 1e-5
    # a LoRA-style patch writes weights in place (loaders/lora.py copy_); the compiled graph must use them
    with torch.no_grad():
        unet.conv_out.weight.copy_(torch.randn_like(unet.conv_out.weight))
        want = unet(x, t, ctx).sample
    got = compiled.unet_forward(x, t, ctx)
    assert rel_err(got, want) < 1e-5


def test_each_mode_passes_torchs_options_and_cuda_only_ones_stay_on_cuda():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert inductor_options("default", cuda) == {}
    assert inductor_options("reduce-overhead", cuda) == {"triton.cudagraphs": True}
    tuned = inductor_options("max-autotune", cuda)
    assert tuned["max_autotune"] and tuned["triton.cudagraphs"] and tuned["conv_1x1_as_mm"]
    assert tuned["epilogue_fusion"] is False
    assert inductor_options("reduce-overhead", cpu) == {}
    assert inductor_options("max-autotune", cpu) == {"max_autotune": True, "conv_1x1_as_mm": True,
                                                     "epilogue_fusion": False}
    assert COMPILE_MODES[0] == "off"


def test_bad_compile_requests_are_refused_before_loading():
    with pytest.raises(ValueError, match="compile='fast'; valid: off, default, reduce-overhead, max-autotune"):
        sdrt.load("toy", compile="fast")
    with pytest.raises(ValueError, match="compile='default': only the torch backend"):
        sdrt.load("/nonexistent/export", backend="onnxruntime", compile="default")


def test_off_keeps_the_module_itself():
    unet = small_unet()
    backend = TorchBackend(unet, _Stub(), _Stub())
    assert backend._unet_call is unet and backend.compile_mode == "off"
