"""A1111's upscaler names (sdrt.postprocess.upscalers) and Extras (sdrt.postprocess.extras): the
list and its order, model files found by name, A1111's repeat-then-Lanczos rule, and the Extras
upscale with its "Postprocess ..." text."""
import numpy as np
import pytest
import torch
from PIL import Image

from sdrt.loaders.model_folders import ModelFolders
from sdrt.postprocess.extras import ExtrasParams, run_extras
from sdrt.postprocess.upscalers import TOY_UPSCALER, Upscalers, UpscalerEntry


class Doubler(torch.nn.Module):
    """A stand-in model upscaler of native scale 2 that counts its runs."""
    scale = 2

    def __init__(self):
        super().__init__()
        self.runs = 0

    def forward(self, x):
        self.runs += 1
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")


def _folders(tmp_path):
    for sub, name in (("ESRGAN", "4x_foo.pth"), ("ESRGAN", "bar_2x.safetensors"), ("RealESRGAN", "RealESRGAN_x4plus.pth"),
                      ("RealESRGAN", "unrelated.pth")):
        (tmp_path / "models" / sub).mkdir(parents=True, exist_ok=True)
        (tmp_path / "models" / sub / name).write_bytes(b"x")
    return ModelFolders(tmp_path)


def test_list_is_in_a1111s_order_with_labels_for_present_files(tmp_path):
    ups = Upscalers(_folders(tmp_path))
    names = [e.name for e in ups.entries()]
    # A1111: the PIL ones, then the models sorted by name (case-insensitive); ESRGAN files listed at scale 4
    assert names == ["None", "Lanczos", "Nearest", "4x_foo", "bar_2x", "R-ESRGAN 4x+", TOY_UPSCALER]
    items = {e.name: e.item() for e in ups.entries()}
    assert items["4x_foo"]["scale"] == 4 and items["bar_2x"]["scale"] == 4 and items[TOY_UPSCALER]["scale"] == 2
    assert items["None"] == {"name": "None", "model_name": None, "model_path": None, "model_url": None, "scale": 4}
    assert items["R-ESRGAN 4x+"]["model_name"] == "RealESRGAN_x4plus"
    with pytest.raises(ValueError, match=r"'R-ESRGAN 2x\+' is unknown \(put RealESRGAN_x2plus.pth in "):
        ups.find("R-ESRGAN 2x+")


def test_a_model_runs_until_large_enough_then_lanczos_to_the_size(tmp_path, monkeypatch):
    ups = Upscalers(tile=0)
    model = Doubler()
    monkeypatch.setattr(ups, "model", lambda entry: model)
    monkeypatch.setattr(ups, "find", lambda name: UpscalerEntry(name, "/x.pth", 2))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    out = ups.upscale(image, 3.0, "x")  # 2x, 4x (>= 3x), then down to int(side * 3) // 8 * 8
    assert model.runs == 2 and out.size == (88, 56)
    big = Image.fromarray(np.asarray(image).repeat(4, 0).repeat(4, 1))
    assert out.tobytes() == big.resize((88, 56), Image.Resampling.LANCZOS).tobytes()
    model.runs = 0
    assert ups.upscale(image, 8.0, "x").size == (240, 160) and model.runs == 3  # at most 3 runs


def test_pil_upscalers_and_resize_as_a1111():
    ups = Upscalers()
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (24, 40, 3), dtype=np.uint8))
    assert ups.upscale(image, 2, "Nearest").tobytes() == image.resize((80, 48), Image.Resampling.NEAREST).tobytes()
    assert ups.upscale(image, 2, "Lanczos").tobytes() == image.resize((80, 48), Image.Resampling.LANCZOS).tobytes()
    # "None": nothing grows the image, the final Lanczos resize does
    assert ups.upscale(image, 2, "None").tobytes() == image.resize((80, 48), Image.Resampling.LANCZOS).tobytes()
    assert ups.resize(image, 100, 30, "Nearest").size == (100, 30)


def test_extras_scale_by_scale_to_and_blend():
    ups = Upscalers()
    image = Image.fromarray(np.random.default_rng(2).integers(0, 255, (30, 40, 3), dtype=np.uint8))
    out, text = run_extras(image, ExtrasParams(upscaler_1="Lanczos", upscaling_resize=2), ups)
    assert out.size == (80, 56) and text == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"
    out, text = run_extras(image, ExtrasParams(resize_mode=1, upscaling_resize_w=100, upscaling_resize_h=50,
                                               upscaler_1="Nearest"), ups)
    assert out.size == (100, 50)  # scaled by max(100/40, 50/30) to 100x72, pasted centred on 100x50
    assert text == "Postprocess upscale to: 100x50, Postprocess crop to: 100x50, Postprocess upscaler: Nearest"
    params = ExtrasParams(upscaler_1="Nearest", upscaler_2="Lanczos", extras_upscaler_2_visibility=0.25)
    out, text = run_extras(image, params, ups)
    # A1111: each upscaler to int(side * 2) (80x60), then Lanczos to the multiple of 8 (80x56)
    nearest = image.resize((80, 60), Image.Resampling.NEAREST).resize((80, 56), Image.Resampling.LANCZOS)
    lanczos = image.resize((80, 60), Image.Resampling.LANCZOS).resize((80, 56), Image.Resampling.LANCZOS)
    want = Image.blend(nearest, lanczos, 0.25)
    assert out.tobytes() == want.tobytes() and text.endswith("Postprocess upscaler 2: Lanczos")
    same, text = run_extras(image.convert("CMYK"), ExtrasParams(), ups)  # upscaler_1 "None": only made RGB
    assert same.mode == "RGB" and same.size == image.size and text == ""


@pytest.mark.parametrize("kw,field", [(dict(upscaler_1="Nope"), "upscaler_1"), (dict(upscaling_resize=9), "upscaling_resize"),
                                      (dict(resize_mode=2), "resize_mode"),
                                      (dict(extras_upscaler_2_visibility=2), "extras_upscaler_2_visibility")])
def test_extras_bad_input_names_the_field(kw, field):
    with pytest.raises(ValueError, match=f"^{field}"):
        ExtrasParams(**kw).validate(Upscalers())
