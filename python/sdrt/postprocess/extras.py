"""A1111's Extras upscale (scripts/postprocessing_upscale.py): one image -> upscaled by a factor or
to a size (cropped to fit), optionally blended with a second upscaler, and the "Postprocess ..."
text A1111 stores with it."""
from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from ..pipelines.infotext import infotext_number, params_line
from ..pipelines.params import ParamError
from .upscalers import Upscalers


@dataclass(frozen=True)
class ExtrasParams:
    """A1111's extras request fields (the upscale part)."""
    resize_mode: int = 0
    upscaling_resize: float = 2.0
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = 0.0

    def validate(self, upscalers: Upscalers) -> None:
        """Raise ParamError naming the field; upscaler names must be listed ("None" always is)."""
        if self.resize_mode not in (0, 1):
            raise ParamError("resize_mode", f"resize_mode={self.resize_mode}; valid: 0 (scale by), 1 (scale to)")
        if not 1.0 <= float(self.upscaling_resize) <= 8.0:
            raise ParamError("upscaling_resize", f"upscaling_resize={self.upscaling_resize}; must be in [1, 8]")
        for name in ("upscaling_resize_w", "upscaling_resize_h"):
            if int(getattr(self, name)) < 1:
                raise ParamError(name, f"{name}={getattr(self, name)}; must be >= 1")
        if not 0.0 <= float(self.extras_upscaler_2_visibility) <= 1.0:
            raise ParamError("extras_upscaler_2_visibility",
                             f"extras_upscaler_2_visibility={self.extras_upscaler_2_visibility}; must be in [0, 1]")
        for name in ("upscaler_1", "upscaler_2"):
            try:
                upscalers.find(getattr(self, name) or "None")
            except ValueError as e:
                raise ParamError(name, f"{name}: {e}") from None

    def upscaled_size(self, width: int, height: int) -> tuple[int, int]:
        """The size an input of width x height is upscaled to, before any crop (for the limits,
        checked before the work: "scale to" a far other aspect upscales much larger than asked)."""
        if self.upscaler_1 in (None, "None"):
            return width, height
        scale = self.upscaling_resize
        if self.resize_mode == 1:
            scale = max(self.upscaling_resize_w / width, self.upscaling_resize_h / height)
        return int(width * scale // 8 * 8), int(height * scale // 8 * 8)


def run_extras(image: Image.Image, p: ExtrasParams, upscalers: Upscalers) -> tuple[Image.Image, str]:
    """(the upscaled image, its "postprocessing" text). upscaler_1 "None" leaves the image as it
    is (A1111 returns early there too)."""
    info: dict = {}
    image = image.convert("RGB")  # A1111 converts every input first
    if p.upscaler_1 in (None, "None"):
        return image, ""
    result = _upscale(image, info, upscalers, p.upscaler_1, p)
    info["Postprocess upscaler"] = p.upscaler_1
    if p.upscaler_2 not in (None, "None") and p.extras_upscaler_2_visibility > 0:
        second = _upscale(image, info, upscalers, p.upscaler_2, p)
        result = Image.blend(result, second.convert(result.mode), float(p.extras_upscaler_2_visibility))
        info["Postprocess upscaler 2"] = p.upscaler_2
    return result, params_line(info)


def _upscale(image: Image.Image, info: dict, upscalers: Upscalers, name: str, p: ExtrasParams) -> Image.Image:
    if p.resize_mode == 1:
        w, h = int(p.upscaling_resize_w), int(p.upscaling_resize_h)
        scale = max(w / image.width, h / image.height)
        info["Postprocess upscale to"] = f"{w}x{h}"
    else:
        scale = float(p.upscaling_resize)
        info["Postprocess upscale by"] = infotext_number(scale)
    out = upscalers.upscale(image, scale, name)
    if p.resize_mode == 1 and p.upscaling_crop:  # centred on a black canvas of the asked size
        canvas = Image.new("RGB", (w, h))
        canvas.paste(out, box=(w // 2 - out.width // 2, h // 2 - out.height // 2))
        out = canvas
        info["Postprocess crop to"] = f"{out.width}x{out.height}"
    return out
