"""One preprocessor run on one image, as the extension's /controlnet/detect does it: -1 or
out-of-range settings take the module's defaults; a mask joins the image for modules that take one."""
from __future__ import annotations

from typing import Optional

import numpy as np

from .preprocessors import dwpose, find_preprocessor, openpose

POSE_DETECTORS = {**openpose.DETECTORS, **dwpose.DETECTORS}  # module -> (image, resolution, folders) -> (map, JSON)


def detect_with_pose(module: str, image: np.ndarray, processor_res: float = -1, threshold_a: float = -1,
                     threshold_b: float = -1, mask: Optional[np.ndarray] = None, seed: int = 0,
                     folders=None) -> tuple[np.ndarray, Optional[dict]]:
    """`detect`, and for the OpenPose modules the pose JSON of the people found (the extension's
    "poses" answer), from the same run; None for other modules."""
    preprocessor = find_preprocessor(module)
    detector = POSE_DETECTORS.get(preprocessor.name)
    if detector is None:
        return detect(module, image, processor_res, threshold_a, threshold_b, mask, seed, folders), None
    resolution = preprocessor.settings(processor_res, threshold_a, threshold_b)[0]
    return detector(image[..., :3], resolution, folders)


def detect(module: str, image: np.ndarray, processor_res: float = -1, threshold_a: float = -1,
           threshold_b: float = -1, mask: Optional[np.ndarray] = None, seed: int = 0, folders=None) -> np.ndarray:
    """The control map (H, W, 3|4) uint8 of `image` ((H, W, 3) uint8 RGB); KeyError for an unknown
    module, ValueError when a module needs the mask and none is given, FileNotFoundError (naming
    file and folder) when a module's weight file is missing."""
    preprocessor = find_preprocessor(module)
    if preprocessor.needs_mask:
        if mask is None:
            raise ValueError(f"preprocessor {module} requires a mask")
        image = np.concatenate([image[..., :3], mask[..., None]], axis=2)
    resolution, a, b = preprocessor.settings(processor_res, threshold_a, threshold_b)
    return preprocessor.run(image, resolution, a, b, np.random.RandomState(seed), folders=folders)
