"""The weight-free preprocessors of the sd-webui-controlnet extension (docs/controlnet.md lists
their names and defaults). Each takes an (H, W, 3|4) uint8 image, the processing resolution and
the two thresholds (and an RNG and the model folders, which these ignore), and returns the control map as (H, W, 3|4) uint8 at the image's aspect ratio."""
from __future__ import annotations

import numpy as np

from ..image_resize import hwc3, resize_with_pad
from ..cv import cv2
from .edges import canny as canny_edges


def passthrough(image: np.ndarray, resolution: int, a: float, b: float, rng=None, folders=None) -> np.ndarray:
    """"none": the image itself is the control map."""
    return hwc3(image)


def canny(image: np.ndarray, resolution: int, low: float, high: float, rng=None, folders=None) -> np.ndarray:
    padded, unpad = resize_with_pad(image, resolution)
    return hwc3(unpad(canny_edges(padded, int(low), int(high))))


def threshold(image: np.ndarray, resolution: int, level: float, b: float, rng=None, folders=None) -> np.ndarray:
    """White where every channel is above `level`, else black."""
    padded, unpad = resize_with_pad(image, resolution)
    out = np.where(padded.min(axis=2) > level, 255, 0).astype(np.uint8)
    return hwc3(unpad(out))


def invert(image: np.ndarray, resolution: int, a: float, b: float, rng=None, folders=None) -> np.ndarray:
    """Black lines on white -> white lines on black (no resize)."""
    return 255 - hwc3(image)


def scribble_xdog(image: np.ndarray, resolution: int, level: float, b: float, rng=None, folders=None) -> np.ndarray:
    """Difference of Gaussians (sigma 0.5 and 5) as a scribble: white where 2 * (255 - dog) exceeds
    `level`, computed in uint8 as the extension does (so it wraps for dark differences)."""
    padded, unpad = resize_with_pad(image, resolution)
    x = padded.astype(np.float32)
    g1, g2 = cv2().GaussianBlur(x, (0, 0), 0.5), cv2().GaussianBlur(x, (0, 0), 5.0)
    dog = np.clip(255.0 - (g2 - g1).min(axis=2), 0, 255).astype(np.uint8)
    wrapped = (2 * (255 - dog).astype(np.uint8)).astype(np.uint8)  # uint8 arithmetic wraps
    out = np.where(wrapped > level, 255, 0).astype(np.uint8)
    return hwc3(unpad(out))


def lineart_standard(image: np.ndarray, resolution: int, a: float, b: float, rng=None, folders=None) -> np.ndarray:
    """Dark lines on a light background -> white lines: how much darker a pixel is than its
    Gaussian (sigma 6) surround, normalised by the median of the clear responses."""
    padded, unpad = resize_with_pad(image, resolution)
    x = padded.astype(np.float32)
    g = cv2().GaussianBlur(x, (0, 0), 6.0)
    intensity = np.clip((g - x).min(axis=2), 0, 255)
    strong = intensity[intensity > 8]
    intensity /= max(16.0, float(np.median(strong)) if strong.size else 16.0)
    intensity *= 127
    return hwc3(unpad(np.clip(intensity, 0, 255).astype(np.uint8)))


def tile_resample(image: np.ndarray, resolution: int, rate: float, b: float, rng=None, folders=None) -> np.ndarray:
    """The image shrunk by the down-sampling rate (area); unchanged below 1.1."""
    image = hwc3(image)
    if rate < 1.1:
        return image
    h, w = image.shape[:2]
    return cv2().resize(image, (int(w / rate), int(h / rate)), interpolation=cv2().INTER_AREA)


def blur_gaussian(image: np.ndarray, resolution: int, sigma: float, b: float, rng=None, folders=None) -> np.ndarray:
    padded, unpad = resize_with_pad(image, resolution)
    return cv2().GaussianBlur(unpad(padded), (0, 0), float(sigma))


def inpaint(image: np.ndarray, resolution: int, a: float, b: float, rng=None, folders=None) -> np.ndarray:
    """RGBA in, RGBA out: the alpha channel is the mask (255 = repaint)."""
    if image.ndim != 3 or image.shape[2] != 4:
        raise ValueError("inpaint preprocessors need the image with its mask (RGBA)")
    return image


def shuffle(image: np.ndarray, resolution: int, a: float, b: float, rng=None, folders=None) -> np.ndarray:
    """Content shuffle: the image remapped through two smooth random flow fields (uniform noise on
    a grid of 256-pixel cells, cubic-upsampled, min-max normalised), drawn from `rng`."""
    padded, unpad = resize_with_pad(image, resolution)
    image = unpad(padded)
    h, w = image.shape[:2]
    rng = rng if rng is not None else np.random.default_rng()
    flow = np.stack([_noise_disk(h, w, rng) * (w - 1), _noise_disk(h, w, rng) * (h - 1)], axis=2)
    return cv2().remap(image, flow.astype(np.float32), None, cv2().INTER_LINEAR)


def _noise_disk(h: int, w: int, rng, cell: int = 256) -> np.ndarray:
    noise = rng.random((h // cell + 2, w // cell + 2)).astype(np.float32)
    noise = cv2().resize(noise, (w + 2 * cell, h + 2 * cell), interpolation=cv2().INTER_CUBIC)
    noise = noise[cell:cell + h, cell:cell + w]
    noise -= noise.min()
    return noise / max(float(noise.max()), 1e-12)
