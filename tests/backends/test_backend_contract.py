"""The Backend protocol on every backend: capabilities, the `extras` UNet inputs (passed to
diffusers on torch, refused clearly by the exported-graph backends), and the shared code of the
ONNX Runtime / TensorRT backends."""
import inspect
import os

import pytest
import torch

import sdrt
from sdrt.backends.base import Backend, BackendCapabilities
from sdrt.backends.onnxruntime_backend import OnnxRuntimeBackend
from sdrt.backends.tensorrt_backend import TensorRTBackend
from sdrt.backends.torch_backend import TorchBackend


@pytest.fixture(scope="module")
def pipe():
    return sdrt.load("toy")


@pytest.fixture(scope="module")
def ort_backend(pipe, tmp_path_factory):
    if os.environ.get("CI"):  # CI installs the onnx extra: a missing onnxruntime must fail there
        import onnxruntime  # noqa: F401
    else:
        pytest.importorskip("onnx")
        pytest.importorskip("onnxruntime")
    from sdrt.export import to_onnx

    out = tmp_path_factory.mktemp("unet-onnx")
    to_onnx(pipe, str(out), components=["unet"])
    return OnnxRuntimeBackend(str(out))


def unet_inputs(unet, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, unet.config.in_channels, 8, 8, generator=g)
    ctx = torch.randn(2, 77, unet.config.cross_attention_dim, generator=g)
    return x, torch.tensor([700.0, 40.0]), ctx


def residual_shapes(unet, x, t, ctx):
    """Shapes of ControlNet's residuals for this UNet: one per skip connection (conv_in, then each
    down block's outputs) and the mid block's output."""
    shapes = {"down": [], "mid": None}

    def down(module, args, out):
        shapes["down"] += [r.shape for r in out[1]]

    handles = [unet.conv_in.register_forward_hook(lambda m, a, out: shapes["down"].append(out.shape)),
               unet.mid_block.register_forward_hook(lambda m, a, out: shapes.update(mid=out.shape))]
    handles += [block.register_forward_hook(down) for block in unet.down_blocks]
    try:
        with torch.no_grad():
            unet(x, t, ctx)
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def test_every_backend_satisfies_the_protocol(pipe, ort_backend):
    trt = object.__new__(TensorRTBackend)  # its constructor needs a GPU and engines; the contract does not
    expected = {TorchBackend: (True, True), OnnxRuntimeBackend: (False, False), TensorRTBackend: (False, False)}
    for backend in (pipe.backend, ort_backend, trt):
        assert isinstance(backend, Backend), type(backend).__name__
        caps = backend.capabilities
        assert isinstance(caps, BackendCapabilities)
        assert (caps.patchable_weights, caps.extra_unet_inputs) == expected[type(backend)]
        assert "cpu" in caps.devices or type(backend) is TensorRTBackend
        extras = inspect.signature(type(backend).unet_forward).parameters["extras"]
        assert extras.default is None
    assert TensorRTBackend.capabilities.devices == ("cuda",)
    assert not isinstance(object(), Backend)
    with pytest.raises(AttributeError):  # frozen: a backend's flags are facts, not settings
        pipe.backend.capabilities.patchable_weights = False


def test_torch_backend_passes_a_mid_block_residual_to_diffusers(pipe):
    unet = pipe.unet
    x, t, ctx = unet_inputs(unet)
    shapes = residual_shapes(unet, x, t, ctx)
    # diffusers adds ControlNet residuals only when both kinds are given; zero skip residuals leave
    # the mid block's as the one change
    down = tuple(torch.zeros(s) for s in shapes["down"])
    mid = torch.randn(shapes["mid"], generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = unet(x, t, ctx, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
        plain = unet(x, t, ctx).sample
    # float64 on purpose: extras are moved to the UNet's dtype like the main inputs
    extras = {"down_block_additional_residuals": tuple(d.double() for d in down),
              "mid_block_additional_residual": mid.double()}
    got = pipe.backend.unet_forward(x, t, ctx, extras=extras)
    assert got.dtype == torch.float32
    assert torch.allclose(got, want, rtol=0, atol=1e-6), (got - want).abs().max()
    assert (got - plain).abs().max() > 1e-3  # the residual reached the UNet
    assert torch.equal(pipe.backend.unet_forward(x, t, ctx, extras={}), pipe.backend.unet_forward(x, t, ctx))


def test_torch_backend_moves_nested_extras_to_the_unet_dtype(pipe):
    backend = TorchBackend(pipe.unet, pipe.text_encoder, pipe.vae, dtype=torch.float32)
    moved = backend._to_unet({"down": (torch.zeros(2, dtype=torch.float64), [torch.ones(1, dtype=torch.float16)]),
                              "index": torch.arange(3), "scale": 0.5})
    assert moved["down"][0].dtype == torch.float32 and moved["down"][1][0].dtype == torch.float32
    assert isinstance(moved["down"], tuple) and isinstance(moved["down"][1], list)
    assert moved["index"].dtype == torch.int64 and moved["scale"] == 0.5


def test_exported_backends_refuse_extras_by_name(pipe, ort_backend):
    x, t, ctx = unet_inputs(pipe.unet)
    other = {"cross_attention_kwargs": {"scale": 0.5}}
    with pytest.raises(ValueError, match=r"extras: the onnxruntime backend's UNet takes no extra inputs "
                                         r"\(got cross_attention_kwargs\); use the torch backend"):
        ort_backend.unet_forward(x, t, ctx, extras=other)
    with pytest.raises(ValueError, match="the tensorrt backend's UNet takes no extra inputs"):
        object.__new__(TensorRTBackend).unet_forward(x, t, ctx, extras=other)
    # ControlNet residuals need an export with its UNet taking them
    with pytest.raises(ValueError, match=r"has no UNet taking ControlNet residuals; export the model with --controlnet"):
        ort_backend.unet_forward(x, t, ctx, extras={"mid_block_additional_residual": torch.zeros(1)})
    want = pipe.backend.unet_forward(x, t, ctx)
    for extras in (None, {}):  # no extras: the plain UNet, as on torch
        assert (ort_backend.unet_forward(x, t, ctx, extras=extras) - want).abs().max() < 1e-4


def test_exported_backend_names_a_missing_component(ort_backend):
    assert not hasattr(ort_backend, "unet")  # no torch modules: features ask capabilities instead
    with pytest.raises(ValueError, match="this export has no text_encoder \\(exported: unet\\)"):
        ort_backend.encode_text(torch.zeros(1, 77, dtype=torch.long))
    with pytest.raises(ValueError, match="this export has no vae_decoder \\(exported: unet\\)"):
        ort_backend.vae_decode(torch.zeros(1, 4, 8, 8))


def test_manifest_names_are_declared_once():
    from sdrt.backends import manifests, onnxruntime_backend, tensorrt_backend
    from sdrt.export import coreml_export, onnx_export, tensorrt_export

    assert onnx_export.MANIFEST == onnxruntime_backend.MANIFEST == manifests.ONNX == "sdrt_export.json"
    assert tensorrt_export.MANIFEST == tensorrt_backend.MANIFEST == manifests.TENSORRT == "sdrt_tensorrt.json"
    assert coreml_export.MANIFEST == manifests.COREML == "sdrt_coreml.json"
