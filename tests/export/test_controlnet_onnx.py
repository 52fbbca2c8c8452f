"""ControlNet to ONNX (export.controlnet_specs): the toy UNet with a random ControlNet exported as
`controlnet` and `unet_controlled`; ONNX Runtime's residuals and noise prediction against torch
(1e-4), chained as the pipeline chains them, at the export size and at another size (dynamic axes)."""
import numpy as np
import onnxruntime as ort
import pytest
import torch

import sdrt
from sdrt.export.controlnet_specs import controlnet_components, residual_layout, residual_names
from sdrt.export.onnx_export import export_controlnet
from sdrt.models import toy as toy_config


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    unet = sdrt.load("toy").unet
    controlnet = toy_config.build_controlnet(unet)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in controlnet.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    out = tmp_path_factory.mktemp("cn_onnx")
    errors = export_controlnet(unet, controlnet.eval(), str(out))
    sessions = {name: ort.InferenceSession(str(out / name / "model.onnx"), providers=["CPUExecutionProvider"])
                for name in ("controlnet", "unet_controlled")}
    return unet, controlnet, errors, sessions


def test_specs_follow_the_model(exported):
    unet, controlnet, _, _ = exported
    specs = controlnet_components(unet, controlnet)
    assert [t.name for t in specs["controlnet"].outputs] == residual_names(5) == \
        ["down_0", "down_1", "down_2", "down_3", "mid"]
    assert [t.name for t in specs["unet_controlled"].inputs][-5:] == residual_names(5)
    assert residual_layout(controlnet) == [(64, 1), (64, 1), (64, 2), (128, 2), (128, 2)]


def test_exported_graphs_match_torch(exported):
    _, _, errors, _ = exported
    assert errors["controlnet"] < 1e-4 and errors["unet_controlled"] < 1e-4, errors


@pytest.mark.parametrize("latent", [8, 12])
def test_chained_on_onnxruntime_equals_torch(exported, latent):
    unet, controlnet, _, sessions = exported
    g = torch.Generator().manual_seed(latent)
    x, t = torch.randn(2, 4, latent, latent, generator=g), torch.tensor([700.0, 700.0])
    ctx, hint = torch.randn(2, 77, 64, generator=g), torch.rand(2, 3, latent * 8, latent * 8, generator=g)
    scale = torch.tensor([1.0, 0.0])  # the uncond row without control, as cond-only control does
    with torch.no_grad():
        down, mid = controlnet(x, t, ctx, hint, return_dict=False)
        down, mid = [d * scale.view(-1, 1, 1, 1) for d in down], mid * scale.view(-1, 1, 1, 1)
        want = unet(x, t, ctx, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
    residuals = sessions["controlnet"].run(None, {"sample": x.numpy(), "timestep": t.numpy(),
                                                  "encoder_hidden_states": ctx.numpy(),
                                                  "controlnet_cond": hint.numpy(), "conditioning_scale": scale.numpy()})
    feed = {"sample": x.numpy(), "timestep": t.numpy(), "encoder_hidden_states": ctx.numpy(),
            **dict(zip(residual_names(len(residuals)), residuals))}
    got = sessions["unet_controlled"].run(None, feed)[0]
    assert np.abs(residuals[-1][1]).max() == 0
    assert np.abs(got - want.numpy()).max() < 1e-4
