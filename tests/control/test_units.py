"""ControlNet units: the extension's field names, aliases, defaults and checks, each bad value a
ParamError naming the unit and field."""
import base64
import io

import numpy as np
import pytest
from PIL import Image

from sdrt.control.units import ControlNetUnit, parse_units, residual_scales, soft_weights
from sdrt.pipelines.params import ParamError


def _b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_fields_and_aliases_parse():
    img = Image.new("RGB", (16, 12), (10, 20, 30))
    (unit,) = parse_units([{"input_image": _b64(img), "module": "canny", "model": "toy_canny [0123abcd]",
                            "guidance": 0.6, "lowvram": True, "resize_mode": 2, "weight": 1.5}])
    assert unit.image.shape == (12, 16, 3) and tuple(unit.image[0, 0]) == (10, 20, 30)
    assert (unit.guidance_end, unit.low_vram, unit.resize_mode, unit.weight) == (0.6, True, "Resize and Fill", 1.5)
    assert unit.enabled and unit.runs


def test_image_with_mask_forms():
    img, mask = Image.new("RGB", (8, 8), (200, 0, 0)), Image.new("L", (8, 8), 255)
    as_dict, as_pair = parse_units([{"image": {"image": _b64(img), "mask": _b64(mask)}},
                                    {"image": [np.asarray(img), np.asarray(mask)]}])
    for unit in (as_dict, as_pair):
        assert unit.image_with_mask().shape == (8, 8, 4) and (unit.image_with_mask()[..., 3] == 255).all()


def test_legacy_resize_mode_names_and_label_modules():
    (unit,) = parse_units([{"resize_mode": "Envelope (Outer Fit)", "module": "invert (from white bg & black line)"}])
    assert unit.resize_mode == "Resize and Fill" and unit.module == "invert"


@pytest.mark.parametrize("unit,field", [
    ({"weight": 2.5}, "controlnet[0].weight"),
    ({"module": "no_such_module"}, "controlnet[0].module"),
    ({"resize_mode": 7}, "controlnet[0].resize_mode"),
    ({"control_mode": "Prompt first"}, "controlnet[0].control_mode"),
    ({"guidance_start": 0.8, "guidance_end": 0.2}, "controlnet[0].guidance_start"),
    ({"image": "not base64 !"}, "controlnet[0].image"),
    ({"processor_res": "big"}, "controlnet[0].processor_res"),
    ({"image": "x", "input_image": "y"}, "controlnet[0].input_image"),
    ({"colour": "red"}, "controlnet[0].colour"),
])
def test_bad_fields_name_the_field(unit, field):
    with pytest.raises(ParamError) as e:
        parse_units([unit])
    assert e.value.field == field and field in str(e.value)


def test_not_a_list():
    with pytest.raises(ParamError, match="controlnet: expected a list"):
        parse_units({"module": "canny"})


def test_disabled_weightless_or_modelless_units_do_not_run():
    off, zero, nomodel = parse_units([{"enabled": False, "model": "m"}, {"weight": 0, "model": "m"}, {"model": "None"}])
    assert not (off.runs or zero.runs or nomodel.runs)


def test_soft_weights_follow_the_extension():
    """weight * 0.825 ** (12 - i) over 13 residuals; SDXL (10) and the toy (5) take the first ones."""
    sd1 = soft_weights(0.8, 13)
    assert sd1[12] == pytest.approx(0.8) and sd1[0] == pytest.approx(0.8 * 0.825 ** 12)
    assert soft_weights(1.0, 10)[-1] == pytest.approx(0.825 ** 3)
    assert residual_scales(ControlNetUnit(weight=0.5), 5) == (0.5,) * 5
    assert residual_scales(ControlNetUnit(weight=1.0, control_mode="ControlNet is more important"), 5) == \
        pytest.approx([0.825 ** k for k in (12, 11, 10, 9, 8)])


@pytest.mark.parametrize("field,value", [("hr_option", "High res only"), ("advanced_weighting", [1.0] * 13),
                                         ("input_mode", "batch"), ("inpaint_crop_input_image", False)])
def test_fields_of_missing_features_are_refused_unless_default(field, value):
    with pytest.raises(ParamError) as e:
        parse_units([{field: value}])
    assert e.value.field == f"controlnet[0].{field}"
    parse_units([{field: {"hr_option": "Both", "advanced_weighting": None, "input_mode": "simple",
                          "inpaint_crop_input_image": True}[field]}])


def test_hires_pass_forces_soft_weights_for_canny_only():
    """The extension's hires rule: canny and mlsd units take the soft weights there, even Balanced."""
    canny, depth = ControlNetUnit(module="canny"), ControlNetUnit(module="depth")
    assert residual_scales(canny, 13, hires=True) == pytest.approx(soft_weights(1.0, 13))
    assert residual_scales(canny, 13) == (1.0,) * 13 and residual_scales(depth, 13, hires=True) == (1.0,) * 13
