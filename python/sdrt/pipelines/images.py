"""Image preparation for img2img and inpainting, with A1111's semantics (modules/images.py,
processing.py): resize modes, mask blur, inpainting fill, the latent mask, and pasting the result
back over the original outside the mask."""
from __future__ import annotations

from typing import Optional

import numpy as np
from PIL import Image, ImageFilter

RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill")
INPAINTING_FILL = ("fill", "original", "latent noise", "latent nothing")


def _resize(im: Image.Image, w: int, h: int) -> Image.Image:
    return im.resize((w, h), resample=Image.LANCZOS)


def resize_image(mode: int, im: Image.Image, width: int, height: int) -> Image.Image:
    """0 just resize; 1 crop and resize (cover, centre crop); 2 resize and fill (fit, then stretch
    the edge rows/columns into the empty bands)."""
    if mode not in (0, 1, 2):
        raise ValueError(f"resize_mode={mode}; valid: 0 ({RESIZE_MODES[0]}), 1 ({RESIZE_MODES[1]}), 2 ({RESIZE_MODES[2]})")
    if mode == 0:
        return _resize(im, width, height)
    ratio, src_ratio = width / height, im.width / im.height
    if mode == 1:
        src_w = width if ratio > src_ratio else im.width * height // im.height
        src_h = height if ratio <= src_ratio else im.height * width // im.width
    else:
        src_w = width if ratio < src_ratio else im.width * height // im.height
        src_h = height if ratio >= src_ratio else im.height * width // im.width
    resized = _resize(im, src_w, src_h)
    res = Image.new(im.mode, (width, height))
    res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    if mode == 2:
        if ratio < src_ratio:
            fill = height // 2 - src_h // 2
            if fill > 0:
                res.paste(resized.resize((width, fill), box=(0, 0, width, 0)), box=(0, 0))
                res.paste(resized.resize((width, fill), box=(0, resized.height, width, resized.height)),
                          box=(0, fill + src_h))
        elif ratio > src_ratio:
            fill = width // 2 - src_w // 2
            if fill > 0:
                res.paste(resized.resize((fill, height), box=(0, 0, 0, height)), box=(0, 0))
                res.paste(resized.resize((fill, height), box=(resized.width, 0, resized.width, height)),
                          box=(fill + src_w, 0))
    return res


def gaussian_blur_mask(mask: Image.Image, blur_x: float, blur_y: float) -> Image.Image:
    """A1111's mask blur: OpenCV-style separable Gaussian, kernel 2 * int(2.5 * sigma + 0.5) + 1,
    reflect-101 borders (scipy.ndimage 'mirror'), rounded back to uint8."""
    from scipy.ndimage import correlate1d

    a = np.asarray(mask.convert("L"), dtype=np.float64)
    for axis, sigma in ((1, blur_x), (0, blur_y)):
        if sigma > 0:
            half = int(2.5 * sigma + 0.5)
            k = np.exp(-((np.arange(-half, half + 1)) ** 2) / (2 * sigma * sigma))
            a = correlate1d(a, k / k.sum(), axis=axis, mode="mirror")
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """Inpainting fill "fill": the masked area is painted with the surrounding colours, blurred in
    from the unmasked pixels at shrinking radii (A1111 masking.fill). Blurring happens on
    premultiplied alpha ("RGBa") so the empty area does not darken the colours."""
    result = Image.new("RGBA", image.size)
    source = Image.new("RGBa", image.size)
    source.paste(image.convert("RGBA").convert("RGBa"), mask=Image.eval(mask.convert("L"), lambda v: 255 - v))
    for radius, repeats in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        blurred = source.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            result.alpha_composite(blurred)
    return result.convert("RGB")


def latent_keep_mask(mask: Image.Image, latent_w: int, latent_h: int, round_mask: bool = True) -> np.ndarray:
    """(h, w) float mask in latent space: 1 = keep the original latent, 0 = repaint (A1111 processing:
    the mask downscaled to the latent size, rounded)."""
    small = np.asarray(mask.convert("L").resize((latent_w, latent_h), resample=Image.LANCZOS), dtype=np.float32) / 255
    if round_mask:
        small = np.around(small)
    return 1.0 - small


def paste_over_original(generated: Image.Image, original: Image.Image, mask: Image.Image) -> Image.Image:
    """Outside the (blurred) mask the original's pixels come back exactly; inside, the new ones
    (A1111 apply_overlay with the mask as alpha)."""
    return Image.composite(generated.convert("RGB"), original.convert("RGB"), mask.convert("L"))


def masked_crop_region(mask: Image.Image, padding: int, width: int, height: int
                       ) -> Optional[tuple[int, int, int, int]]:
    """A1111's "inpaint only masked" region: the bounding box of the mask's non-zero pixels grown by
    `padding` on every side (within the image), then widened or heightened about its centre to the
    processing size's aspect ratio, shifted back inside the image where it would leave it
    (masking.get_crop_region + expand_crop_region). None when the mask is empty."""
    box = mask.convert("L").getbbox()
    if box is None:
        return None
    x1, y1, x2, y2 = box
    x1, y1 = max(x1 - padding, 0), max(y1 - padding, 0)
    x2, y2 = min(x2 + padding, mask.width), min(y2 + padding, mask.height)
    if (x2 - x1) / (y2 - y1) > width / height:
        y1, y2 = _grow_span(y1, y2, int((x2 - x1) * height / width - (y2 - y1)), mask.height)
    else:
        x1, x2 = _grow_span(x1, x2, int((y2 - y1) * width / height - (x2 - x1)), mask.width)
    return x1, y1, x2, y2


def _grow_span(lo: int, hi: int, grow: int, limit: int) -> tuple[int, int]:
    lo, hi = lo - grow // 2, hi + grow - grow // 2
    if hi > limit:
        lo, hi = lo - (hi - limit), limit
    if lo < 0:
        lo, hi = 0, min(hi - lo, limit)
    return lo, hi


def paste_into_region(generated: Image.Image, original: Image.Image, region: tuple[int, int, int, int],
                      mask: Image.Image) -> Image.Image:
    """The inpainted crop scaled back to its region of the original, then the original restored
    outside the (blurred, full-size) mask: A1111 apply_overlay with paste_loc."""
    x1, y1, x2, y2 = region
    canvas = original.convert("RGB").copy()
    canvas.paste(_resize(generated.convert("RGB"), x2 - x1, y2 - y1), (x1, y1))
    return paste_over_original(canvas, original, mask)
