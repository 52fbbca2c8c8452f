"""What a preprocessor is: its names, sliders (defaults and ranges), tags and run function.

A run function takes (image (H, W, 3|4) uint8, resolution, threshold_a, threshold_b, rng=None,
folders=None) and returns the control map, (H', W', 3|4) uint8 at the image's aspect ratio;
`folders` (sdrt.loaders.model_folders.ModelFolders) is where model-based ones find their weight
files (sdrt.control.annotators)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np


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
FIXED_512 = Slider("Resolution", 512, 512, 512)  # shuffle: always 512 unless pixel-perfect


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
    resolution: Slider = RESOLUTION
    show_resolution: bool = True    # False: a hidden slider (its range and default still apply)
    uses_resolution: bool = True    # False: the map keeps the image's size (invert, tile, inpaint)

    def sliders(self) -> list[Slider]:
        """The sliders the API shows."""
        shown = self.resolution if self.show_resolution else None
        return [s for s in (shown, self.slider_1, self.slider_2) if s is not None]

    def settings(self, processor_res: float, threshold_a: float, threshold_b: float) -> tuple[int, float, float]:
        """(resolution, a, b) with -1 or out-of-range values replaced by the defaults."""
        return (int(self.resolution.clamp_default(processor_res)),
                (self.slider_1 or _HIDDEN).clamp_default(threshold_a),
                (self.slider_2 or _HIDDEN).clamp_default(threshold_b))
