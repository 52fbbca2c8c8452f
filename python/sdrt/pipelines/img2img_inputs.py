"""img2img's and inpainting's inputs prepared once per job with A1111's semantics (processing.py
StableDiffusionProcessingImg2Img.init): resized init images, the blurred mask, the "inpaint only
masked" region; from them each batch's StartPoint and the paste-back post-processor."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from PIL import Image

from . import images as imgs
from .infotext import infotext_number
from .params import GenerationParams
from .postprocess import PasteBack
from .start_point import FILLS, StartPoint


@dataclass
class Img2ImgInputs:
    strength: float
    resized: list[Image.Image]                 # what is encoded, at width x height
    pasted_on: list[Image.Image]               # what the result is pasted back onto
    mask: Optional[Image.Image] = None         # at width x height, blurred (white = repaint)
    overlay_mask: Optional[Image.Image] = None  # the mask the paste-back uses
    region: Optional[tuple[int, int, int, int]] = None  # inpaint only masked: where the result goes
    fill: str = "original"
    infotext: dict | None = None

    @classmethod
    def prepare(cls, p: GenerationParams) -> "Img2ImgInputs":
        """`p` sized and validated."""
        inits, width, height = list(p.init_images), p.width, p.height
        inputs = cls(float(p.denoising_strength), [], [], fill=FILLS[p.inpainting_fill], infotext={})
        if p.mask is not None:
            inputs._prepare_mask(p, inits[0].size)
        if inputs.region is not None:  # the init images at full size for pasting back, their crops for sampling
            inputs.pasted_on = [im.convert("RGB") for im in inits]
            inputs.resized = [imgs.resize_image(2, im.crop(inputs.region), width, height) for im in inputs.pasted_on]
        else:
            inputs.resized = [imgs.resize_image(p.resize_mode, im.convert("RGB"), width, height) for im in inits]
            inputs.pasted_on, inputs.overlay_mask = inputs.resized, inputs.mask
        return inputs

    def _prepare_mask(self, p: GenerationParams, size: tuple[int, int]) -> None:
        blur = p.mask_blur
        self.infotext["Mask blur"] = infotext_number(blur)
        m = p.mask.convert("L")
        if p.inpainting_mask_invert:
            m = Image.eval(m, lambda v: 255 - v)
        if not p.inpaint_full_res:
            m = imgs.resize_image(p.resize_mode, m, p.width, p.height)
            self.mask = imgs.gaussian_blur_mask(m, blur, blur) if blur > 0 else m
            return
        m = imgs.gaussian_blur_mask(m, blur, blur) if blur > 0 else m  # A1111 blurs at full size, then crops
        self.region = imgs.masked_crop_region(m, int(p.inpaint_full_res_padding), p.width, p.height)
        if self.region is None:
            raise ValueError("mask: empty (no pixel to repaint), so 'inpaint only masked' has no region")
        self.overlay_mask = m
        self.mask = imgs.resize_image(2, m.crop(self.region), p.width, p.height)
        self.infotext.update({"Inpaint area": "Only masked", "Masked area padding": int(p.inpaint_full_res_padding)})

    def picks(self, iteration: int, batch_size: int) -> list[int]:
        """Image j of the job uses init image j modulo their number (A1111 cycles through them)."""
        return [(iteration * batch_size + j) % len(self.resized) for j in range(batch_size)]

    def start_point(self, pipe, iteration: int, batch_size: int) -> StartPoint:
        to_encode, keep = [self.resized[k] for k in self.picks(iteration, batch_size)], None
        width, height = to_encode[0].size
        if self.mask is not None:
            if self.fill == "fill":
                to_encode = [imgs.fill_masked(im, self.mask) for im in to_encode]
            k = imgs.latent_keep_mask(self.mask, width // 8, height // 8)
            keep = torch.from_numpy(k)[None, None].expand(batch_size, pipe.info.latent_channels, -1, -1)
        return StartPoint(pipe.encode(to_encode), self.strength, keep, self.fill,
                          pipe.image_conditioning(batch_size, width, height, to_encode, self.mask))

    def paste_back(self) -> Optional[PasteBack]:
        """The post-processor that restores the original outside the mask (None without a mask)."""
        if self.overlay_mask is None:
            return None
        return PasteBack(self.pasted_on, self.overlay_mask, self.region, self.picks)
