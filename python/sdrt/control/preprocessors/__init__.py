"""The preprocessors (the extension's "modules"), by the names and labels its API uses, with their
sliders (defaults and ranges) and control-type tags. One table: the API's module_list,
module_detail and control_types, the unit checks and /controlnet/detect all read it."""
from __future__ import annotations

from . import depth_onnx, dwpose, hed, lineart, lineart_anime, model_free, openpose, pidinet, seg_onnx
from .base import FIXED_512, RESOLUTION, Preprocessor, Slider  # noqa: F401  (the table's types, public here)

_P = Preprocessor
PREPROCESSORS: tuple[Preprocessor, ...] = (
    _P("none", "none", model_free.passthrough, priority=10, tags=("InstructP2P",)),
    _P("canny", "canny", model_free.canny, Slider("Low Threshold", 100, 1, 255, 1),
       Slider("High Threshold", 200, 1, 255, 1), priority=100, tags=("Canny",)),
    _P("threshold", "threshold", model_free.threshold, Slider("Binarization Threshold", 127, 0, 255)),
    _P("invert", "invert (from white bg & black line)", model_free.invert, priority=20,
       tags=("Canny", "Lineart", "Scribble", "MLSD"), show_resolution=False, uses_resolution=False),
    _P("scribble_xdog", "scribble_xdog", model_free.scribble_xdog, Slider("XDoG Threshold", 32, 1, 64),
       tags=("Scribble",)),
    _P("lineart_standard", "lineart_standard (from white bg & black line)", model_free.lineart_standard,
       priority=100, tags=("Lineart",)),
    _P("tile_resample", "tile_resample", model_free.tile_resample, Slider("Down Sampling Rate", 1.0, 1.0, 8.0),
       priority=100, tags=("Tile",), uses_resolution=False),
    _P("blur_gaussian", "blur_gaussian", model_free.blur_gaussian, Slider("Sigma", 9.0, 0.01, 64.0), tags=("Tile",)),
    _P("inpaint_only", "inpaint_only", model_free.inpaint, priority=100, tags=("Inpaint",), needs_mask=True,
       show_resolution=False, uses_resolution=False),
    _P("inpaint", "inpaint_global_harmonious", model_free.inpaint, tags=("Inpaint",), needs_mask=True,
       show_resolution=False, uses_resolution=False),
    _P("shuffle", "shuffle", model_free.shuffle, tags=("Shuffle",), resolution=FIXED_512, show_resolution=False),
    # model-based: the user's weight files (sdrt.control.annotators)
    *hed.PREPROCESSORS, *pidinet.PREPROCESSORS, *lineart.PREPROCESSORS, *lineart_anime.PREPROCESSORS,
    *openpose.PREPROCESSORS, *dwpose.PREPROCESSORS, *depth_onnx.PREPROCESSORS, *seg_onnx.PREPROCESSORS,
)
_BY_KEY = {**{p.name: p for p in PREPROCESSORS}, **{p.label: p for p in PREPROCESSORS}}


def find_preprocessor(name: str) -> Preprocessor:
    """By label first, then by name (the extension's lookup)."""
    found = next((p for p in PREPROCESSORS if p.label == name), None) or _BY_KEY.get(name)
    if found is None:
        raise KeyError(name)
    return found


def sorted_preprocessors() -> list[Preprocessor]:
    """The API's order: "none" first, then by priority and label, both descending."""
    rest = sorted((p for p in PREPROCESSORS if p.name != "none"), key=lambda p: (p.priority, p.label), reverse=True)
    return [_BY_KEY["none"]] + rest


def control_tags() -> list[str]:
    return sorted({t for p in PREPROCESSORS for t in p.tags})
