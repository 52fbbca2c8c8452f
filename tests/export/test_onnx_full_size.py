"""A full-size SD 1.5 UNet (random weights, 860M parameters) through ONNX fp16 and ONNX Runtime at
a small latent size. Slow (about a minute, ~12 GB of memory): `pytest -m slow`."""
import types

import numpy as np
import pytest
import torch


@pytest.mark.slow
def test_full_size_sd15_unet_exports_fp16_and_runs_in_onnxruntime(tmp_path):
    import onnxruntime as ort
    from diffusers import UNet2DConditionModel

    from sdrt.export.onnx_export import export_component
    from sdrt.models.architectures import ARCHITECTURES

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**{**ARCHITECTURES["sd1"].unet, "sample_size": 8}).eval()  # traced at 8x8 latents
    path = tmp_path / "unet" / "model.onnx"
    export_component(types.SimpleNamespace(unet=unet), "unet", str(path), fp16=True)
    assert (tmp_path / "unet" / "model.onnx").stat().st_size < 2**31  # fp16: one file, ~1.7 GB
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 4, 16, 24)  # another latent size than traced (multiples of 8): the axes are dynamic
    t = torch.tensor([999.0, 10.0])
    ctx = torch.randn(2, 154, 768)  # two 77-token chunks
    got = session.run(None, {"sample": x.numpy(), "timestep": t.numpy(), "encoder_hidden_states": ctx.numpy()})[0]
    with torch.no_grad():
        want = unet(x, t, ctx).sample.numpy()
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err < 2e-2, f"fp16 vs fp32 relative error {err:.3g}"
