"""The preprocessors (the extension's "modules"), by the names and labels its API uses, with their
sliders (defaults and ranges) and control-type tags. One table: the API's module_list,
module_detail and control_types, the unit checks and /controlnet/detect all read it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from . import model_free


@dataclass(frozen=True)
class Slider:
    name: str
    value: float
    min: float
    max: float
    step: float = 0.01

    def clamp_default(self, value: float) -> float:
        """The extension's bound check: a value outside the slider's range (-1) is its default."""
        return self.value if value is None or not self.min <= value <= self.max else value

    def as_json(self) -> dict:
        return {"name": self.name, "value": self.value, "min": self.min, "max": self.max, "step": self.step}


RESOLUTION = Slider("Resolution", 512, 64, 2048, 8)
_HIDDEN = Slider("", 0.5, 0.0, 1.0)  # a slider the UI does not show: its range and default still apply


@dataclass(frozen=True)
class Preprocessor:
    name: str                       # the API's module name
    label: str                      # its alias (alias_names=true)
    run: Callable[..., np.ndarray]  # (image, resolution, threshold_a, threshold_b, rng) -> control map
    slider_1: Optional[Slider] = None
    slider_2: Optional[Slider] = None
    priority: int = 0
    tags: tuple[str, ...] = ()
    needs_mask: bool = False
    uses_resolution: bool = True

    def sliders(self) -> list[Slider]:
        """The sliders the API shows (the resolution slider for every one: the extension's legacy
        modules all report it)."""
        return [s for s in (RESOLUTION, self.slider_1, self.slider_2) if s is not None]

    def settings(self, processor_res: float, threshold_a: float, threshold_b: float) -> tuple[int, float, float]:
        """(resolution, a, b) with -1 or out-of-range values replaced by the defaults."""
        return (int(RESOLUTION.clamp_default(processor_res)),
                (self.slider_1 or _HIDDEN).clamp_default(threshold_a),
                (self.slider_2 or _HIDDEN).clamp_default(threshold_b))


_P = Preprocessor
PREPROCESSORS: tuple[Preprocessor, ...] = (
    _P("none", "none", model_free.passthrough, priority=10, tags=("InstructP2P",)),
    _P("canny", "canny", model_free.canny, Slider("Low Threshold", 100, 1, 255, 1),
       Slider("High Threshold", 200, 1, 255, 1), priority=100, tags=("Canny",)),
    _P("threshold", "threshold", model_free.threshold, Slider("Binarization Threshold", 127, 0, 255)),
    _P("invert", "invert (from white bg & black line)", model_free.invert, priority=20,
       tags=("Canny", "Lineart", "Scribble", "MLSD"), uses_resolution=False),
    _P("scribble_xdog", "scribble_xdog", model_free.scribble_xdog, Slider("XDoG Threshold", 32, 1, 64),
       tags=("Scribble",)),
    _P("lineart_standard", "lineart_standard (from white bg & black line)", model_free.lineart_standard,
       priority=100, tags=("Lineart",)),
    _P("tile_resample", "tile_resample", model_free.tile_resample, Slider("Down Sampling Rate", 1.0, 1.0, 8.0),
       priority=100, tags=("Tile",), uses_resolution=False),
    _P("blur_gaussian", "blur_gaussian", model_free.blur_gaussian, Slider("Sigma", 9.0, 0.01, 64.0), tags=("Tile",)),
    _P("inpaint_only", "inpaint_only", model_free.inpaint, priority=100, tags=("Inpaint",), needs_mask=True,
       uses_resolution=False),
    _P("inpaint", "inpaint_global_harmonious", model_free.inpaint, tags=("Inpaint",), needs_mask=True,
       uses_resolution=False),
    _P("shuffle", "shuffle", model_free.shuffle, tags=("Shuffle",)),
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
