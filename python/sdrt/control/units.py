"""ControlNet units with the sd-webui-controlnet extension's field names and checks: what
``controlnet=[...]`` (Python) and ``alwayson_scripts.ControlNet.args`` (HTTP) take.

Differences from the extension, on purpose: `enabled` defaults to True (its older API did; a unit
given to sdrt is meant to run), and resize_mode also takes 0 / 1 / 2 as its docs say. Every bad
value raises a ParamError naming the unit and field ("controlnet[1].weight").
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import io
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from PIL import Image

from ..pipelines.params import ParamError
from .image_resize import LEGACY_RESIZE_MODES, RESIZE_MODES, hwc3
from .preprocessors import Preprocessor, find_preprocessor

NO_MODEL = ("", "None", "none", None)  # a unit's model field naming no model

BALANCED, PROMPT_MORE, CONTROL_MORE = "Balanced", "My prompt is more important", "ControlNet is more important"
CONTROL_MODES = (BALANCED, PROMPT_MORE, CONTROL_MORE)
ALIASES = {"input_image": "image", "guidance": "guidance_end", "lowvram": "low_vram", "mask_image": "mask"}
# UI-only fields of the extension's unit: accepted and ignored
IGNORED = {"is_ui", "output_dir", "loopback", "save_detected_map", "pulid_mode", "guessmode", "guess_mode",
           "batch_mask_dir"}
# fields of features sdrt does not have: accepted at their defaults only
UNSUPPORTED = {"hr_option": ("Both",), "inpaint_crop_input_image": (True,), "input_mode": ("simple",),
               "batch_images": (None, "", []), "effective_region_mask": (None,), "ipadapter_input": (None,),
               "advanced_weighting": (None,)}
MAX_IMAGE_SIDE = 8192


@dataclass
class ControlNetUnit:
    enabled: bool = True
    module: str = "none"
    model: str = "None"
    weight: float = 1.0
    image: Optional[np.ndarray] = None   # (H, W, 3) uint8 RGB
    mask: Optional[np.ndarray] = None    # (H, W) uint8, 255 = masked
    resize_mode: str = "Crop and Resize"
    low_vram: bool = False
    processor_res: int = -1
    threshold_a: float = -1.0
    threshold_b: float = -1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    pixel_perfect: bool = False
    control_mode: str = BALANCED

    @property
    def preprocessor(self) -> Preprocessor:
        return find_preprocessor(self.module)

    @property
    def runs(self) -> bool:
        """Whether the unit changes anything: enabled, with a model and a non-zero weight."""
        return self.enabled and self.weight > 0 and self.model not in NO_MODEL

    def image_with_mask(self) -> Optional[np.ndarray]:
        """(H, W, 4): the image with its mask (zeros when none) as the fourth channel."""
        if self.image is None:
            return None
        mask = self.mask if self.mask is not None else np.zeros(self.image.shape[:2], np.uint8)
        return np.concatenate([self.image, mask[..., None]], axis=2)


def parse_units(units: Sequence[Any], field: str = "controlnet") -> list[ControlNetUnit]:
    """Units from ControlNetUnit objects or dicts with the extension's fields."""
    if units is None:
        return []
    if isinstance(units, (dict, ControlNetUnit)) or not isinstance(units, (list, tuple)):
        raise ParamError(field, f"{field}: expected a list of units (dicts with the ControlNet extension's fields)")
    return [parse_unit(u, f"{field}[{i}]") for i, u in enumerate(units)]


def parse_unit(unit: Any, where: str) -> ControlNetUnit:
    if isinstance(unit, ControlNetUnit):
        unit = dataclasses.asdict(unit)
    if not isinstance(unit, Mapping):
        raise ParamError(where, f"{where}: expected a dict of unit fields, got {type(unit).__name__}")
    values = _renamed(unit, where)
    known = {f.name for f in dataclasses.fields(ControlNetUnit)}
    unknown = sorted(set(values) - known - IGNORED - set(UNSUPPORTED))
    if unknown:
        raise ParamError(f"{where}.{unknown[0]}", f"{where}.{unknown[0]}: unknown unit field; valid: {sorted(known)}")
    for name, defaults in UNSUPPORTED.items():
        if name in values and values[name] not in defaults:
            raise ParamError(f"{where}.{name}", f"{where}.{name}={str(values[name])[:40]!r}: not supported by sdrt; "
                                                f"valid: {defaults[0]!r}")
    out = ControlNetUnit()
    for name in known & set(values):
        setattr(out, name, _FIELD_CHECKS.get(name, _keep)(values[name], f"{where}.{name}"))
    _split_image(out, values.get("image"), where)
    _check_unit(out, where)
    return out


def _renamed(unit: Mapping, where: str) -> dict:
    values = dict(unit)
    for old, new in ALIASES.items():
        if old in values:
            if new in values and values[new] is not None and values[old] is not None:
                raise ParamError(f"{where}.{old}", f"{where}.{old}: given with {new!r}; {old} is the old name of {new}")
            value = values.pop(old)
            values.setdefault(new, value)
            if values[new] is None:
                values[new] = value
    return values


def _keep(value, where):
    return value


def _bool(value, where: str) -> bool:
    if isinstance(value, (bool, np.bool_)) or value in (0, 1):
        return bool(value)
    raise ParamError(where, f"{where}={value!r}; expected true or false")


def _number(lo: Optional[float], hi: Optional[float], integer: bool = False):
    def check(value, where: str):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ParamError(where, f"{where}={value!r}; expected a finite number")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ParamError(where, f"{where}={value}; must be in [{lo:g}, {hi:g}]")
        return int(value) if integer else float(value)
    return check


def _string(value, where: str) -> str:
    if value is None:
        return "None"
    if not isinstance(value, str) or len(value) > 1000:
        raise ParamError(where, f"{where}={str(value)[:80]!r}; expected a string")
    return value


def _module(value, where: str) -> str:
    value = "none" if value is None else _string(value, where)
    try:
        return find_preprocessor(value).name
    except KeyError:
        from .preprocessors import sorted_preprocessors

        valid = ", ".join(p.name for p in sorted_preprocessors())
        raise ParamError(where, f"{where}={value!r}: unknown preprocessor; valid: {valid}") from None


def _resize_mode(value, where: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(RESIZE_MODES):
        return RESIZE_MODES[value]
    if isinstance(value, str) and (value in RESIZE_MODES or value in LEGACY_RESIZE_MODES):
        return LEGACY_RESIZE_MODES.get(value, value)
    raise ParamError(where, f"{where}={value!r}; valid: {', '.join(RESIZE_MODES)} (or 0, 1, 2)")


def _control_mode(value, where: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(CONTROL_MODES):
        return CONTROL_MODES[value]
    if value not in CONTROL_MODES:
        raise ParamError(where, f"{where}={value!r}; valid: {', '.join(CONTROL_MODES)}")
    return value


def _mask(value, where: str) -> Optional[np.ndarray]:
    if value is None:
        return None
    return decode_image(value, where)[..., 0]


_FIELD_CHECKS = {
    "enabled": _bool, "low_vram": _bool, "pixel_perfect": _bool,
    "module": _module, "model": _string,
    "weight": _number(0.0, 2.0), "processor_res": _number(-1, 8192, integer=True),
    "threshold_a": _number(None, None), "threshold_b": _number(None, None),
    "guidance_start": _number(0.0, 1.0), "guidance_end": _number(0.0, 1.0),
    "resize_mode": _resize_mode, "control_mode": _control_mode, "mask": _mask,
    "image": lambda value, where: None,  # set by _split_image
}


def _split_image(unit: ControlNetUnit, value, where: str) -> None:
    """image: one image (base64, PIL, array), {"image", "mask"}, or an (image, mask) pair."""
    if value is None:
        return
    mask = None
    if isinstance(value, Mapping):
        value, mask = value.get("image"), value.get("mask")
    elif isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ParamError(f"{where}.image", f"{where}.image: a list must be [image, mask]")
        value, mask = value
    unit.image = hwc3(decode_image(value, f"{where}.image"))  # transparency composited onto white
    if mask is not None:
        unit.mask = decode_image(mask, f"{where}.image.mask")[..., 0]


def decode_image(value, where: str) -> np.ndarray:
    """(H, W, 3|4) uint8 from a PIL image, an array or a base64 string (a data URL too)."""
    if isinstance(value, Image.Image):
        image = value
    elif isinstance(value, np.ndarray):
        array = value if value.ndim == 3 else value[..., None]
        if array.dtype != np.uint8 or array.shape[2] not in (1, 3, 4):
            raise ParamError(where, f"{where}: arrays must be uint8 (H, W), (H, W, 1|3|4)")
        return np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array
    elif isinstance(value, str):
        image = _from_base64(value, where)
    else:
        raise ParamError(where, f"{where}: expected a base64 image, a PIL image or a uint8 array, got "
                                f"{type(value).__name__}")
    if max(image.size) > MAX_IMAGE_SIDE:
        raise ParamError(where, f"{where}: {image.size[0]}x{image.size[1]}; at most {MAX_IMAGE_SIDE} per side")
    return np.asarray(image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB"))


def _from_base64(text: str, where: str) -> Image.Image:
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        raw = base64.b64decode(text, validate=False)
        image = Image.open(io.BytesIO(raw))
        image.load()
        return image
    except (binascii.Error, ValueError, OSError, Image.DecompressionBombError) as e:
        raise ParamError(where, f"{where}: not a base64-encoded image ({e})") from None


def _check_unit(unit: ControlNetUnit, where: str) -> None:
    if unit.guidance_start > unit.guidance_end:
        raise ParamError(f"{where}.guidance_start", f"{where}.guidance_start={unit.guidance_start} > "
                                                    f"guidance_end={unit.guidance_end}")
    if unit.mask is not None and unit.image is not None and unit.mask.shape != unit.image.shape[:2]:
        raise ParamError(f"{where}.mask", f"{where}.mask: {unit.mask.shape[1]}x{unit.mask.shape[0]} does not match "
                                          f"the image's {unit.image.shape[1]}x{unit.image.shape[0]}")


def soft_weights(weight: float, count: int) -> tuple[float, ...]:
    """The extension's "soft injection": residual i scaled by weight * 0.825 ** (12 - i) over the 13
    of an SD1 ControlNet; models with fewer residuals take the first `count` (as it does for SDXL)."""
    return tuple(weight * 0.825 ** (12 - i) for i in range(count))


def residual_scales(unit: ControlNetUnit, count: int, hires: bool = False) -> tuple[float, ...]:
    """Per-residual scales; in a hires pass canny and mlsd units always take the soft weights (the
    extension forces them there)."""
    forced = hires and ("canny" in unit.module or "mlsd" in unit.module)
    if unit.control_mode == BALANCED and not forced:
        return (float(unit.weight),) * count
    return soft_weights(float(unit.weight), count)


def infotext(unit: ControlNetUnit, model_title: str, resolution: int, a: float, b: float) -> str:
    """The extension's "ControlNet N" entry: its eleven keys in its order."""
    pairs = [("Module", unit.module), ("Model", model_title), ("Weight", unit.weight), ("Resize Mode", unit.resize_mode),
             ("Processor Res", resolution), ("Threshold A", a), ("Threshold B", b),
             ("Guidance Start", unit.guidance_start), ("Guidance End", unit.guidance_end),
             ("Pixel Perfect", unit.pixel_perfect), ("Control Mode", unit.control_mode)]
    return ", ".join(f"{k}: {v}" for k, v in pairs)
