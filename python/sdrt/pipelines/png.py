"""Saving images with their infotext, as A1111 does (PNG text chunk `parameters`)."""
from __future__ import annotations

from PIL import Image, PngImagePlugin


def save_png(image: Image.Image, path, infotext: str | None, *, chunks: dict | None = None) -> None:
    """`path` may be a file name or a binary file object; `chunks`: more text chunks (extras'
    "postprocessing")."""
    meta = PngImagePlugin.PngInfo()
    for key, text in {**({"parameters": infotext} if infotext else {}), **(chunks or {})}.items():
        meta.add_text(key, text)
    image.save(path, format="PNG", pnginfo=meta)


def read_parameters(path: str) -> str | None:
    """The infotext of a PNG (``parameters`` chunk); None when the image has none."""
    try:
        with Image.open(path) as im:
            return im.info.get("parameters")
    except (OSError, Image.UnidentifiedImageError) as exc:
        raise ValueError(f"{path}: not a readable image ({exc})") from exc
