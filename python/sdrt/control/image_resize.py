"""How the sd-webui-controlnet extension sizes images (docs/controlnet.md): the preprocessors'
padded resize to their processing resolution, the pixel-perfect resolution, and the control map's
resize to the generation size per resize mode. Images are (H, W, C) uint8 NumPy arrays.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .cv import cv2

JUST_RESIZE, CROP_AND_RESIZE, RESIZE_AND_FILL = "Just Resize", "Crop and Resize", "Resize and Fill"
RESIZE_MODES = (JUST_RESIZE, CROP_AND_RESIZE, RESIZE_AND_FILL)  # also addressed as 0 / 1 / 2
LEGACY_RESIZE_MODES = {"Inner Fit (Scale to Fit)": CROP_AND_RESIZE, "Scale to Fit (Inner Fit)": CROP_AND_RESIZE,
                       "Outer Fit (Shrink to Fit)": RESIZE_AND_FILL, "Envelope (Outer Fit)": RESIZE_AND_FILL}


def hwc3(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W) / (H, W, 1|3|4) -> (H, W, 3): grey repeated, RGBA composited onto white."""
    if image.dtype != np.uint8:
        raise ValueError(f"image dtype {image.dtype}; control images are uint8")
    if image.ndim == 2:
        image = image[..., None]
    channels = image.shape[2]
    if channels == 1:
        return np.repeat(image, 3, axis=2)
    if channels == 3:
        return image
    if channels == 4:
        rgb, alpha = image[..., :3].astype(np.float32), image[..., 3:].astype(np.float32) / 255.0
        return np.clip(rgb * alpha + 255.0 * (1.0 - alpha), 0, 255).astype(np.uint8)
    raise ValueError(f"image has {channels} channels; expected 1, 3 or 4")


def _round(x: float) -> int:
    return int(np.round(x))  # half to even, as the extension rounds


def resize_with_pad(image: np.ndarray, resolution: int) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """Scale so the short side is `resolution` (cubic up, area down), then pad bottom / right by
    edge replication to multiples of 64; returns the padded image and the function cutting a
    result at that size back to the scaled size."""
    image = hwc3(image)
    h, w = image.shape[:2]
    k = float(resolution) / min(h, w)
    ht, wt = _round(h * k), _round(w * k)
    image = cv2().resize(image, (wt, ht), interpolation=cv2().INTER_CUBIC if k > 1 else cv2().INTER_AREA)
    pad_h, pad_w = -ht % 64, -wt % 64
    padded = np.pad(image, [[0, pad_h], [0, pad_w], [0, 0]], mode="edge")
    return padded, lambda out: out[:ht, :wt]


def pixel_perfect_resolution(image_hw: tuple[int, int], target_hw: tuple[int, int], resize_mode: str) -> int:
    """The processing resolution that maps the image 1:1 onto the generation: the short side
    scaled like the image (the larger ratio for crop / just resize, the smaller for fill)."""
    (h0, w0), (h, w) = image_hw, target_hw
    ratios = (h / h0, w / w0)
    k = min(ratios) if resize_mode == RESIZE_AND_FILL else max(ratios)
    return _round(k * min(h0, w0))


def resize_map(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """The extension's resize of a control map: nearest for label maps (3..199 colours, so labels
    stay labels), area when shrinking, cubic when enlarging; unchanged at the same size. A black and
    white map (edges, lines) is made black and white again (Otsu's threshold on the grey mean), an
    inpaint map's mask channel 0 / 255 again. (The extension also thins 1-pixel edge maps: not here.)"""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    rgb = image[..., :3]
    colours = len(np.unique(rgb.reshape(-1, 3), axis=0))
    if 2 < colours < 200:
        interpolation = cv2().INTER_NEAREST
    elif width * height < w * h:
        interpolation = cv2().INTER_AREA
    else:
        interpolation = cv2().INTER_CUBIC
    out = cv2().resize(image, (width, height), interpolation=interpolation)
    if colours == 2 and rgb.min() < 16 and rgb.max() > 240:
        grey = np.round(out[..., :3].astype(np.float32).mean(axis=2)).astype(np.uint8)
        _, grey = cv2().threshold(grey, 0, 255, cv2().THRESH_BINARY + cv2().THRESH_OTSU)
        out[..., :3] = grey[..., None]
    if image.shape[2] == 4:
        out[..., 3] = np.where(out[..., 3] > 127, 255, 0)
    return out


def fit_to_size(image: np.ndarray, width: int, height: int, resize_mode: str) -> np.ndarray:
    """A control map (H, W, C) at the generation size: stretched (Just Resize), scaled to cover and
    centre-cropped (Crop and Resize), or scaled to fit and centred on the median colour of the
    map's border (Resize and Fill; a mask channel there counts as masked)."""
    if resize_mode == JUST_RESIZE:
        return resize_map(image, width, height)
    h0, w0 = image.shape[:2]
    cover = resize_mode == CROP_AND_RESIZE
    k = (max if cover else min)(height / h0, width / w0)
    scaled = resize_map(image, _round(w0 * k), _round(h0 * k))
    sh, sw = scaled.shape[:2]
    if cover:
        top, left = max(0, (sh - height) // 2), max(0, (sw - width) // 2)
        return scaled[top:top + height, left:left + width]
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    fill = np.median(border, axis=0).astype(image.dtype)
    if image.shape[2] == 4:
        fill[3] = 255
    out = np.empty((height, width, image.shape[2]), dtype=image.dtype)
    out[:] = fill
    top, left = (height - sh) // 2, (width - sw) // 2
    out[top:top + sh, left:left + sw] = scaled
    return out
