"""Edge detectors without weights, on (H, W, 3) uint8 RGB images at the processing resolution."""
from __future__ import annotations

import numpy as np

from ..cv import cv2


def canny(image: np.ndarray, low: float = 100, high: float = 200) -> np.ndarray:
    """Canny (1986) edges with hysteresis thresholds `low` / `high` on the gradient magnitude:
    (H, W) uint8, 255 on edges (OpenCV's Canny, as the extension's canny module)."""
    return cv2().Canny(np.ascontiguousarray(image), float(low), float(high))
