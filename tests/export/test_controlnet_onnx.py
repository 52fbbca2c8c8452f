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


# --- a model exported with ControlNets (sdrt export --controlnet; conftest's controlled_export), run by the
# onnxruntime backend ---

CONTROL_IMAGE = np.zeros((64, 64, 3), np.uint8)
CONTROL_IMAGE[8:28, 36:56] = (255, 0, 0)
GENERATION = dict(prompt="a red square", seed=3, steps=6, width=64, height=64, sampler_name="Euler a", cfg_scale=5)


def _units(**first):
    from PIL import Image

    image = Image.fromarray(CONTROL_IMAGE)
    return [{"model": "toy_canny", "module": "canny", "image": image, "weight": 0.8, **first},
            {"model": "toy_seg", "module": "none", "image": image, "weight": 0.6,
             "guidance_start": 0.2, "guidance_end": 0.7, "control_mode": "ControlNet is more important"}]


def test_manifest_lists_the_controlled_unet_and_each_controlnet(controlled_export):
    out, manifest = controlled_export
    assert "unet" not in manifest["components"] and "unet_controlled" in manifest["components"]
    assert set(manifest["controlnets"]) == {"toy_canny", "toy_seg"}
    assert [r["name"] for r in manifest["controlnet_residuals"]] == residual_names(5)
    for entry in manifest["controlnets"].values():
        assert (out / entry["file"]).is_file() and entry["parity_max_abs_error"] < 1e-4


def test_onnxruntime_pipeline_with_controlnets_matches_torch(controlled_export):
    """Two units (one cond-only with a guidance window) through the whole pipeline: the same
    picture within one level, and the same infotext."""
    out, _ = controlled_export
    want = sdrt.load("toy").txt2img(**GENERATION, controlnet=_units())
    got = sdrt.load(str(out), backend="onnxruntime").txt2img(**GENERATION, controlnet=_units())
    diff = np.abs(np.asarray(want.images[0], dtype=int) - np.asarray(got.images[0], dtype=int))
    assert diff.max() <= 1, diff.max()
    assert got.infotexts[0] == want.infotexts[0] and "ControlNet 1:" in got.infotexts[0]
    # the control changed the picture (not a run that ignored the units)
    plain = sdrt.load("toy").txt2img(**GENERATION)
    assert np.abs(np.asarray(plain.images[0], dtype=int) - np.asarray(want.images[0], dtype=int)).max() > 20


def test_controlled_export_without_units_matches_torch(controlled_export):
    out, _ = controlled_export
    want = sdrt.load("toy").txt2img(**GENERATION)
    got = sdrt.load(str(out), backend="onnxruntime").txt2img(**GENERATION)
    assert np.abs(np.asarray(want.images[0], dtype=int) - np.asarray(got.images[0], dtype=int)).max() <= 1


def test_unit_errors_name_the_field_and_the_exported_controlnets(controlled_export, tmp_path):
    from sdrt.export import to_onnx
    from sdrt.pipelines.params import ParamError

    out, _ = controlled_export
    pipe = sdrt.load(str(out), backend="onnxruntime")
    with pytest.raises(ParamError, match=r"controlnet\[0\]\.model='control_v11p_sd15_canny'.*valid: toy_canny, toy_seg"):
        pipe.txt2img(**GENERATION, controlnet=_units(model="control_v11p_sd15_canny"))
    plain = tmp_path / "plain"
    to_onnx(sdrt.load("toy"), str(plain), components=["text_encoder", "unet", "vae_decoder"])
    with pytest.raises(ParamError, match=r"controlnet\[0\]\.model=.*exported without ControlNets.*--controlnet"):
        sdrt.load(str(plain), backend="onnxruntime").txt2img(**GENERATION, controlnet=_units())
    with pytest.raises(ValueError, match=r"controlnets\[0\]='toy_canny': ControlNets are exported with the UNet"):
        to_onnx(sdrt.load("toy"), str(tmp_path / "x"), components=["vae_decoder"], controlnets=["toy_canny"])
    with pytest.raises(ValueError, match=r"controlnets\[1\]='toy_canny'.*already in the export"):
        to_onnx(sdrt.load("toy"), str(tmp_path / "y"), controlnets=["toy_canny", "toy_canny"])


def test_unit_names_match_as_the_extension_gives_them():
    """A unit names an exported ControlNet by its name, its A1111 title "name [hash]" or its file's
    path; a hash of another version of the file is refused, as is a name not exported."""
    from sdrt.backends.exported import ExportedBackend

    backend = ExportedBackend()
    backend.manifest = {"controlnets": {"control_v11p_sd15_canny": {
        "title": "control_v11p_sd15_canny [abcd1234]", "outputs": residual_names(13), "file": "x"}}}
    for name in ("control_v11p_sd15_canny", "Control_v11p_sd15_canny [ABCD1234]",
                 "/models/ControlNet/control_v11p_sd15_canny.safetensors"):
        handle, title = backend.find_controlnet(name)
        assert (handle.key, handle.residual_count, title) == ("control_v11p_sd15_canny", 13,
                                                               "control_v11p_sd15_canny [abcd1234]")
    with pytest.raises(ValueError, match="another version"):
        backend.find_controlnet("control_v11p_sd15_canny [00000000]")
    with pytest.raises(ValueError, match=r"valid: control_v11p_sd15_canny \[abcd1234\]"):
        backend.find_controlnet("control_v11p_sd15_depth")


def test_a_file_path_must_be_the_exported_version(tmp_path):
    """A unit naming a ControlNet by a file's path gets the exported ControlNet only if that file
    has the exported one's hash (another version is refused, not silently replaced)."""
    from safetensors.torch import save_file

    from sdrt.control.job import model_title
    from sdrt.pipelines.params import ParamError

    unet = sdrt.load("toy").unet
    files = []
    for seed in (0, 1):
        controlnet = toy_config.build_controlnet(unet)
        torch.manual_seed(seed)
        with torch.no_grad():
            for p in controlnet.parameters():
                p.add_(torch.randn(p.shape) * 0.01)
        folder = tmp_path / f"v{seed}"
        folder.mkdir()
        save_file({k: v.contiguous() for k, v in controlnet.state_dict().items()}, str(folder / "canny.safetensors"))
        files.append(str(folder / "canny.safetensors"))
    out = tmp_path / "onnx"
    from sdrt.export import to_onnx

    manifest = to_onnx(sdrt.load("toy"), str(out), components=["unet"], controlnets=[files[0]])
    assert manifest["controlnets"]["canny"]["title"] == model_title(files[0])
    control = sdrt.load(str(out), backend="onnxruntime").control
    handle, title = control.load(files[0])
    assert handle.key == "canny" and title == model_title(files[0])
    with pytest.raises(ParamError, match="another version"):
        control.load(files[1])


def test_residual_count_is_checked(controlled_export):
    out, _ = controlled_export
    backend = sdrt.load(str(out), backend="onnxruntime").backend
    x = torch.randn(1, 4, 8, 8)
    with pytest.raises(ValueError, match="3 ControlNet residuals.*takes 5"):
        backend.unet_forward(x, torch.tensor([500.0]), torch.randn(1, 77, 64),
                             {"down_block_additional_residuals": [x, x], "mid_block_additional_residual": x})


def test_export_again_without_controlnets_removes_their_graphs(tmp_path):
    from sdrt.export import to_onnx

    to_onnx(sdrt.load("toy"), str(tmp_path), components=["unet"], controlnets=["toy_seg"])
    assert (tmp_path / "unet_controlled").is_dir() and (tmp_path / "controlnets" / "toy_seg").is_dir()
    manifest = to_onnx(sdrt.load("toy"), str(tmp_path), components=["unet"])
    assert set(manifest["components"]) == {"unet"} and "controlnets" not in manifest
    assert not (tmp_path / "unet_controlled").exists() and not (tmp_path / "controlnets" / "toy_seg").exists()
