"""Files that are not upscalers fail with an error naming the file and the layouts tried (and why
each did not match); pickles that try to run code are refused without running it."""
from __future__ import annotations

import os
import pickle
import shlex

import pytest
import torch
from published_upscalers import random_weights, realesrgan_rrdbnet, srvgg_compact
from safetensors.torch import save_file

from sdrt.postprocess import LAYOUTS, UnknownUpscalerLayout, UpscalerFileError, load_upscaler_file

LORA_LIKE = {
    "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32, 1, 1),
    "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(32, 4, 1, 1),
    "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.tensor(4.0),
}


def assert_names_file_and_layouts(err: Exception, path) -> str:
    msg = str(err)
    assert isinstance(err, ValueError) and isinstance(err, UpscalerFileError)
    assert msg.startswith(str(path)), msg
    for layout in LAYOUTS:
        assert layout in msg, (layout, msg)
    return msg


@pytest.mark.parametrize("ext", [".pth", ".safetensors"])
def test_lora_like_file(tmp_path, ext):
    path = tmp_path / f"my_lora{ext}"
    torch.save(LORA_LIKE, path) if ext == ".pth" else save_file(LORA_LIKE, str(path))
    with pytest.raises(UnknownUpscalerLayout) as err:
        load_upscaler_file(path)
    msg = assert_names_file_and_layouts(err.value, path)
    assert "no key 'conv_first.weight'" in msg and "no key 'body.0.weight'" in msg
    assert "lora_unet_down_blocks_0" in msg  # a sample of what the file does hold
    assert set(err.value.tried) == set(LAYOUTS)


@pytest.mark.parametrize("ext", [".pth", ".safetensors"])
def test_empty_state_dict(tmp_path, ext):
    path = tmp_path / f"empty{ext}"
    torch.save({}, path) if ext == ".pth" else save_file({}, str(path))
    with pytest.raises(UnknownUpscalerLayout) as err:
        load_upscaler_file(path)
    assert "holds 0 tensors" in assert_names_file_and_layouts(err.value, path)


@pytest.mark.parametrize("ext", [".pth", ".ckpt", ".safetensors"])
def test_garbage_bytes(tmp_path, ext):
    path = tmp_path / f"garbage{ext}"
    path.write_bytes(os.urandom(64) + b"not a model")
    with pytest.raises(UpscalerFileError) as err:
        load_upscaler_file(path)
    assert_names_file_and_layouts(err.value, path)


def test_garbage_onnx(tmp_path):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"\x00\x01 definitely not protobuf" * 10)
    with pytest.raises(UpscalerFileError) as err:
        load_upscaler_file(path)
    assert str(err.value).startswith(str(path)) and "ONNX Runtime cannot load it" in str(err.value)


def test_missing_file_and_wrong_extension(tmp_path):
    with pytest.raises(ValueError, match="not found") as err:
        load_upscaler_file(tmp_path / "nope.pth")
    assert str(tmp_path / "nope.pth") in str(err.value)
    other = tmp_path / "model.txt"
    other.write_text("hi")
    with pytest.raises(UpscalerFileError, match=r"unsupported upscaler file extension '\.txt'"):
        load_upscaler_file(other)


def test_layout_with_wrong_shapes_or_extra_keys(tmp_path):
    sd = random_weights(realesrgan_rrdbnet(2, nf=16, gc=8))
    sd["body.1.rdb2.conv3.weight"] = torch.zeros(8, 5, 3, 3)
    path = tmp_path / "bad_shape.pth"
    torch.save(sd, path)
    with pytest.raises(UpscalerFileError, match="body.1.rdb2.conv3.weight") as err:
        load_upscaler_file(path)
    assert str(err.value).startswith(str(path))
    sd = random_weights(srvgg_compact(2, nf=8))
    sd["extra.weight"] = torch.zeros(3)
    torch.save(sd, path)
    with pytest.raises(UpscalerFileError, match="unexpected.*extra.weight"):
        load_upscaler_file(path)


def test_non_tensor_values_are_refused(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"params_ema": {"body.0.weight": 3}}, path)
    with pytest.raises(UpscalerFileError, match="not a tensor"):
        load_upscaler_file(path)


# --------------------------------------------------------------------------------------------
# malicious pickles (the pattern of tests/loaders/test_safe_pickle.py)
# --------------------------------------------------------------------------------------------


class _Reduce:
    """Pickles as a call of ``func(*args)``: how every malicious pickle runs code."""

    def __init__(self, func, args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _evil(marker) -> tuple[object, str]:
    return _Reduce(os.system, (f"touch {shlex.quote(str(marker))}",)), f"{os.name}.system"


@pytest.mark.parametrize("container", ["bare pickle", "torch zip params_ema", "legacy torch"])
def test_code_execution_is_refused(tmp_path, container):
    marker = tmp_path / "pwned"
    evil, refused = _evil(marker)
    pickle.loads(pickle.dumps(evil))  # control: the payload is live when unpickled unrestricted
    assert marker.exists()
    marker.unlink()
    good = random_weights(srvgg_compact(2, nf=8))
    path = tmp_path / "RealESRGAN_evil.pth"
    if container == "bare pickle":
        path.write_bytes(pickle.dumps(evil, protocol=2))
    elif container == "torch zip params_ema":
        torch.save({"params_ema": {**good, "body.1.weight": evil}}, path)
    else:
        torch.save({**good, "evil": evil}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(UpscalerFileError) as err:
        load_upscaler_file(path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and refused in msg and "may contain code" in msg
    assert not marker.exists()
