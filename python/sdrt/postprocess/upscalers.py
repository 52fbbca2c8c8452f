"""A1111's upscaler names and what each does to an image (modules/upscaler.py, images.resize_image).

Names, in A1111's list order: "None", "Lanczos", "Nearest"; the model files in models/ESRGAN by
file name; sdrt's toy upscaler (ships with the toy model); A1111's Real-ESRGAN labels ("R-ESRGAN
4x+", ...) when their usual file is in models/RealESRGAN (sdrt downloads nothing). The latent
modes ("Latent", "Latent (bicubic antialiased)", ...) are names of the hires fix only: they
resize latents, not images (sdrt.pipelines.hires).

A model upscaler runs at its native scale, repeatedly (at most 3 times) until the image is at
least the requested size, and the result is resized to it with Lanczos (A1111 Upscaler.upscale).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from PIL import Image

LANCZOS, NEAREST = Image.Resampling.LANCZOS, Image.Resampling.NEAREST

# A1111 shared.latent_upscale_modes: name -> (torch interpolate mode, antialias)
LATENT_UPSCALE_MODES = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
LATENT_DEFAULT = "Latent"  # what an unset hr_upscaler means

_PIXEL = {"None": None, "Lanczos": LANCZOS, "Nearest": NEAREST}
# A1111's Real-ESRGAN labels -> (the published file's name without extension, native scale)
REAL_ESRGAN_LABELS = {
    "R-ESRGAN General 4xV3": ("realesr-general-x4v3", 4),
    "R-ESRGAN General WDN 4xV3": ("realesr-general-wdn-x4v3", 4),
    "R-ESRGAN AnimeVideo": ("realesr-animevideov3", 4),
    "R-ESRGAN 4x+": ("RealESRGAN_x4plus", 4),
    "R-ESRGAN 4x+ Anime6B": ("RealESRGAN_x4plus_anime_6B", 4),
    "R-ESRGAN 2x+": ("RealESRGAN_x2plus", 2),
}
TOY_UPSCALER = "ToyESRGAN_2x"
TOY_UPSCALER_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "toy", "weights", "upscaler",
                                 TOY_UPSCALER + ".safetensors")
MAX_PASSES = 3  # A1111 runs a model at most 3 times to reach the requested scale


class UnknownUpscalerError(ValueError):
    def __init__(self, name: str, valid: list[str], hint: str = ""):
        super().__init__(f"upscaler {name!r} is unknown{hint}; valid: {', '.join(valid)}")
        self.name, self.valid = name, valid


@dataclass(frozen=True)
class UpscalerEntry:
    name: str
    path: Optional[str] = None  # None: a PIL resize ("None", "Lanczos", "Nearest")
    scale: float = 4            # what A1111 lists (UpscalerData's default 4 for the PIL ones)

    def item(self) -> dict:
        """A1111's UpscalerItem (GET /sdapi/v1/upscalers)."""
        model_name = os.path.splitext(os.path.basename(self.path))[0] if self.path else None
        return {"name": self.name, "model_name": model_name, "model_path": self.path, "model_url": None,
                "scale": self.scale}


class Upscalers:
    """The upscalers available with `folders` (an sdrt.loaders.ModelFolders, or None for the
    built-in ones only). Models load on first use and stay cached. `tile`/`overlap`: A1111's
    ESRGAN_tile / ESRGAN_tile_overlap options (tile 0: whole images)."""

    def __init__(self, folders=None, *, tile: int = 192, overlap: int = 8, device: str = "cpu",
                 dtype: torch.dtype | None = None):
        self.folders, self.tile, self.overlap, self.device, self.dtype = folders, tile, overlap, device, dtype
        self._models: dict[str, object] = {}

    def entries(self) -> list[UpscalerEntry]:
        """"None", "Lanczos", "Nearest", then the models sorted by name, case-insensitively (A1111's
        order). A1111 lists every ESRGAN file with scale 4; each model runs at its own scale."""
        models = [UpscalerEntry(e.name, e.path, 4) for e in self.folders.list("esrgan")] if self.folders else []
        if os.path.isfile(TOY_UPSCALER_PATH):
            models.append(UpscalerEntry(TOY_UPSCALER, TOY_UPSCALER_PATH, 2))
        found = {e.name: e.path for e in self.folders.list("realesrgan")} if self.folders is not None else {}
        models += [UpscalerEntry(label, found[stem], scale) for label, (stem, scale) in REAL_ESRGAN_LABELS.items()
                   if stem in found]
        return [UpscalerEntry(name) for name in _PIXEL] + sorted(models, key=lambda e: e.name.lower())

    def find(self, name: str) -> UpscalerEntry:
        entries = self.entries()
        for entry in entries:
            if entry.name == name:
                return entry
        hint = ""
        if name in REAL_ESRGAN_LABELS:  # A1111 would download it; sdrt reads only local files
            folder = self.folders.folder("realesrgan") if self.folders is not None else "models/RealESRGAN"
            hint = f" (put {REAL_ESRGAN_LABELS[name][0]}.pth in {folder}; sdrt downloads nothing)"
        raise UnknownUpscalerError(name, [e.name for e in entries], hint)

    def upscale(self, image: Image.Image, scale: float, name: str) -> Image.Image:
        """A1111 Upscaler.upscale: to int(size * scale) // 8 * 8 on each side."""
        entry = self.find(name)
        dest = (int(image.width * scale // 8 * 8), int(image.height * scale // 8 * 8))
        for _ in range(MAX_PASSES):
            before = image.size
            image = self._upscale_once(entry, image, scale)
            if image.size == before or (image.width >= dest[0] and image.height >= dest[1]):
                break
        return image if image.size == dest else image.resize(dest, resample=LANCZOS)

    def resize(self, image: Image.Image, width: int, height: int, name: Optional[str]) -> Image.Image:
        """A1111 images.resize_image mode 0 ("just resize") with an upscaler, as the hires fix
        and img2img use it: the upscaler for growing, Lanczos to the exact size."""
        if name is None or name == "None" or image.mode == "L":
            return image.resize((width, height), resample=LANCZOS)
        scale = max(width / image.width, height / image.height)
        if scale > 1.0:
            image = self.upscale(image, scale, name)
        return image if image.size == (width, height) else image.resize((width, height), resample=LANCZOS)

    def _upscale_once(self, entry: UpscalerEntry, image: Image.Image, scale: float) -> Image.Image:
        if entry.path is None:
            method = _PIXEL[entry.name]
            if method is None:
                return image
            return image.resize((int(image.width * scale), int(image.height * scale)), resample=method)
        return self.run_model(entry, image)

    def run_model(self, entry: UpscalerEntry, image: Image.Image) -> Image.Image:
        """One pass of a model upscaler at its native scale (tiled as the options say)."""
        from .tiling import upscale_tiled

        model = self.model(entry)
        pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
        out = upscale_tiled(model, pixels.to(self.device), tile=self.tile, overlap=self.overlap, dtype=self.dtype)
        array = (out[0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0).round().astype(np.uint8)
        return Image.fromarray(array)

    def model(self, entry: UpscalerEntry):
        from .load import load_upscaler_file

        if entry.path not in self._models:
            self._models[entry.path] = load_upscaler_file(entry.path, device=self.device)
        return self._models[entry.path]
