"""Images crossing the HTTP API: base64 in (PNG, JPEG or WEBP only, size-checked before the pixels
are decoded, never fetched from a URL) and base64 PNG out, with the infotext in its `parameters`
chunk as A1111 writes it."""
from __future__ import annotations

import base64
import binascii
import io
import re
import warnings

from PIL import Image

from ..pipelines.png import save_png
from .limits import Limits

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP")
_OPENED_AS = ALLOWED_FORMATS + ("MPO",)  # phone cameras' multi-picture JPEGs open as MPO
_DATA_URL = re.compile(r"^data:image/[a-zA-Z0-9.+-]+;base64,")


class ImageInputError(ValueError):
    """A bad image in a request; `loc` is the field's path for the 422 answer."""

    def __init__(self, loc: tuple, message: str):
        super().__init__(message)
        self.loc = loc


def decode_image(data: str, loc: tuple, limits: Limits) -> Image.Image:
    """A base64 image (optionally a `data:image/...;base64,` URL, as A1111 accepts) as a loaded
    PIL image. URLs are refused: the server never fetches anything."""
    if not isinstance(data, str) or not data:
        raise ImageInputError(loc, "expected a base64-encoded PNG, JPEG or WEBP image")
    if data.startswith(("http://", "https://", "file:", "ftp://")):
        raise ImageInputError(loc, "image URLs are not fetched; send the image itself, base64-encoded")
    data = _DATA_URL.sub("", data, count=1)
    if len(data) > limits.max_image_b64_chars:
        raise ImageInputError(loc, f"base64 image of {len(data)} characters exceeds the limit of "
                                   f"{limits.max_image_b64_chars}")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ImageInputError(loc, "not valid base64") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw), formats=ALLOWED_FORMATS)  # header only; no other parser runs
            if image.format not in _OPENED_AS:
                raise ImageInputError(loc, f"image format {image.format} is not accepted; send PNG, JPEG or WEBP")
            width, height = image.size
            if width < 1 or height < 1 or width * height > limits.max_image_pixels:
                raise ImageInputError(loc, f"image of {width}x{height} pixels exceeds the limit of "
                                           f"{limits.max_image_pixels} pixels")
            image.load()
    except ImageInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageInputError(loc, "image exceeds the decoded-pixel limit") from None
    except Image.UnidentifiedImageError:
        raise ImageInputError(loc, "not a PNG, JPEG or WEBP image (the formats accepted)") from None
    except Exception as e:  # Pillow raises many types for corrupt data; all of them mean "bad image"
        raise ImageInputError(loc, f"could not decode the image ({type(e).__name__}: {e})") from None
    return image


def encode_png(image: Image.Image, infotext: str | None, chunks: dict | None = None) -> str:
    buf = io.BytesIO()
    if infotext or chunks:
        save_png(image, buf, infotext, chunks=chunks)
    else:
        image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def read_png_info(image: Image.Image) -> dict:
    """A1111's png-info: the `parameters` text and the other text chunks of the image."""
    items = {k: v for k, v in (image.info or {}).items() if isinstance(v, str)}
    try:
        exif = image.getexif()
        comment = exif.get_ifd(0x8769).get(0x9286) if exif else None
    except Exception:  # corrupt EXIF: the image simply has none we can read
        comment = None
    if "parameters" not in items and comment:  # JPEG / WEBP: EXIF UserComment (0x9286) in the Exif IFD
        if isinstance(comment, bytes):
            comment = _decode_user_comment(comment)
        if isinstance(comment, str) and comment:
            items["parameters"] = comment
    return items


def _decode_user_comment(raw: bytes) -> str:
    prefix, body = raw[:8], raw[8:]
    if prefix.startswith(b"UNICODE"):
        for codec in ("utf-16-be", "utf-16-le"):
            try:
                return body.decode(codec)
            except UnicodeDecodeError:
                continue
    return body.decode("utf-8", errors="replace")
