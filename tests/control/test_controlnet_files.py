"""Original ControlNet files: weights laid out by lllyasviel/ControlNet's own cldm module (the
fixtures beside this file were computed by that module: fixtures/make_cldm_fixtures.py), written
as a ``control_model.``-prefixed fp16 .safetensors and as a bare-key .pth, load into diffusers'
ControlNetModel and give that module's 13 residuals; the full SD1.5 key layout maps completely."""
import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from sdrt.control import load_controlnet
from sdrt.control.models import bare_keys, config_from_keys, controlnet_path
from sdrt.loaders.model_folders import ModelFolders, UnknownModelError
from sdrt.loaders.state_dict import ModelFileError

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def _config() -> dict:
    with open(os.path.join(FIXTURES, "cldm_tiny_config.json"), encoding="utf-8") as f:
        return json.load(f)


def _weights() -> dict:
    """The fixture module's weights: randn * 0.05 in its parameter order after manual_seed(0)."""
    torch.manual_seed(0)
    return {k: torch.randn(shape) * 0.05 for k, shape in _config()["parameters"]}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("controlnet")
    weights = _weights()
    fp16 = folder / "control_tiny-fp16.safetensors"
    save_file({"control_model." + k: v.half() for k, v in weights.items()}, str(fp16))
    pth = folder / "control_v11p_tiny.pth"
    torch.save(weights, pth)
    return {"fp16": str(fp16), "pth": str(pth)}


def _relative_errors(model, prefix: str) -> list[float]:
    io = load_file(os.path.join(FIXTURES, "cldm_tiny_io.safetensors"))
    with torch.no_grad():
        down, mid = model(io["x"], io["timesteps"], io["context"], io["hint"], return_dict=False)
    outs = list(down) + [mid]
    assert len(outs) == 13
    return [float((o - io[f"{prefix}{i:02d}"]).abs().max() / io[f"{prefix}{i:02d}"].abs().max())
            for i, o in enumerate(outs)]


@pytest.mark.parametrize("kind,reference", [("pth", "out_"), ("fp16", "fp16w_out_")])
def test_original_files_give_the_cldm_residuals(files, kind, reference):
    model = load_controlnet(files[kind])
    assert max(_relative_errors(model, reference)) < 1e-3


def test_sd15_key_layout_maps_completely():
    from diffusers import ControlNetModel
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    with open(os.path.join(FIXTURES, "cldm_sd15_shapes.json"), encoding="utf-8") as f:
        shapes = {k: tuple(v) for k, v in json.load(f).items()}
    config = config_from_keys(shapes)
    assert (config["block_out_channels"], config["layers_per_block"], config["cross_attention_dim"],
            config["attention_head_dim"], config["conditioning_embedding_out_channels"]) == \
        ([320, 640, 1280, 1280], 2, 768, 8, [16, 32, 96, 256])
    with torch.device("meta"):
        model = ControlNetModel(**config)
        state = {k: torch.empty(s) for k, s in shapes.items()}
    converted = convert_controlnet_checkpoint(bare_keys(state, "sd15"), dict(model.config))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == expected


def test_names_resolve_in_the_controlnet_folder(tmp_path, files):
    folder = tmp_path / "models" / "ControlNet"
    folder.mkdir(parents=True)
    target = folder / "control_v11p_tiny.pth"
    target.write_bytes(open(files["pth"], "rb").read())
    folders = ModelFolders(tmp_path)
    for name in ("control_v11p_tiny", "control_v11p_tiny.pth", "control_v11p_tiny [0123abcd]"):
        assert controlnet_path(name, folders) == str(target)
    with pytest.raises(UnknownModelError, match="control_v11p_tiny"):
        controlnet_path("control_v11p_tinny", folders)


def test_a_file_that_is_not_a_controlnet(tmp_path):
    path = tmp_path / "unet.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)}, str(path))
    with pytest.raises(ModelFileError, match="input_hint_block"):
        load_controlnet(str(path))


def test_a_diffusers_keyed_single_file_loads(toy_pipe, random_controlnets, tmp_path):
    """Most SDXL ControlNets users have are diffusers state dicts in one .safetensors."""
    from sdrt.control.models import load_controlnet as load

    original = load(random_controlnets[0])
    path = tmp_path / "diffusers_xl_like.safetensors"
    save_file({k: v.contiguous() for k, v in original.state_dict().items()}, str(path))
    loaded = load(str(path))
    assert loaded.config.mid_block_type == original.config.mid_block_type == "UNetMidBlock2D"
    assert list(loaded.config.conditioning_embedding_out_channels) == [16, 32, 64, 64]
    x, t, ctx = torch.randn(1, 4, 8, 8), torch.tensor([300.0]), torch.randn(1, 7, 64)
    hint = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a = original(x, t, ctx, hint, return_dict=False)
        b = loaded(x, t, ctx, hint, return_dict=False)
    for u, v in zip(list(a[0]) + [a[1]], list(b[0]) + [b[1]]):
        assert torch.equal(u, v)


def test_shuffle_files_pool_globally_and_control_loras_are_refused(files, tmp_path):
    shuffle = tmp_path / "control_v11e_tiny_shuffle.pth"
    shuffle.write_bytes(open(files["pth"], "rb").read())
    assert load_controlnet(str(shuffle)).config.global_pool_conditions
    assert not load_controlnet(files["pth"]).config.global_pool_conditions
    lora = tmp_path / "control-lora-canny-rank128.safetensors"
    save_file({"lora_controlnet": torch.zeros(1), "input_hint_block.0.weight": torch.zeros(16, 3, 3, 3)}, str(lora))
    with pytest.raises(ModelFileError, match="control-LoRA"):
        load_controlnet(str(lora))
