"""A job's ControlNet units, prepared once: model loaded, input image chosen, preprocessor run
(the extension's order: pixel-perfect resolution, then the module at that resolution), and per
pass the control map fitted to the pass's size as an ActiveControl (sdrt.control.residuals)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from ..pipelines.params import GenerationParams, ParamError
from .image_resize import JUST_RESIZE, RESIZE_MODES, fit_to_size, pixel_perfect_resolution
from .residuals import ActiveControl
from .units import CONTROL_MORE, ControlNetUnit, infotext, residual_scales


@dataclass(frozen=True)
class PreparedUnit:
    unit: ControlNetUnit
    controlnet: object
    title: str               # the model as the infotext names it
    control_map: np.ndarray  # (H, W, 3) uint8, or (H, W, 4) for inpaint modules (alpha: 255 = masked)
    resize_mode: str
    settings: tuple[int, float, float]

    def active(self, width: int, height: int, hires: bool = False) -> ActiveControl:
        """This unit for a pass of `width` x `height` (`hires`: the hires fix's second pass)."""
        fitted = fit_to_size(self.control_map, width, height, self.resize_mode)
        hint = torch.from_numpy(fitted.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
        if hint.shape[1] == 4:  # inpaint: masked pixels are -1 (the extension's encoding)
            masked = (hint[:, 3:] > 0.5).float()
            hint = hint[:, :3] * (1 - masked) - masked
        count, pools = _facts(self.controlnet)
        cond_only = self.unit.control_mode == CONTROL_MORE or pools
        return ActiveControl(self.controlnet, hint, residual_scales(self.unit, count, hires), cond_only,
                             self.unit.guidance_start, self.unit.guidance_end)

    @property
    def infotext(self) -> str:
        return infotext(self.unit, self.title, *self.settings)


def _facts(controlnet) -> tuple[int, bool]:
    """(residual count, pools globally) of a diffusers ControlNetModel or of an exported one
    (backends.exported.ExportedControlNet)."""
    if hasattr(controlnet, "controlnet_down_blocks"):
        return len(controlnet.controlnet_down_blocks) + 1, bool(controlnet.config.global_pool_conditions)
    return controlnet.residual_count, controlnet.global_pool_conditions


def prepare_units(units: Sequence[ControlNetUnit], p: GenerationParams, seed: int,
                  load: Callable[[str, str], tuple[object, str]], folders=None) -> list[PreparedUnit]:
    """The units that run (enabled, a model, weight > 0), in order. `load(model, field)` -> (the
    ControlNetModel, its infotext title); `seed`: the job's first seed (the preprocessors' RNG);
    `folders`: the model folders the preprocessors' weight files are found in."""
    prepared = []
    for i, unit in enumerate(units):
        if not unit.runs:
            continue
        where = f"controlnet[{i}]"
        controlnet, title = load(unit.model, f"{where}.model")
        image, resize_mode = _input_image(unit, p, where)
        preprocessor = unit.preprocessor
        resolution, a, b = preprocessor.settings(unit.processor_res, unit.threshold_a, unit.threshold_b)
        if unit.pixel_perfect:
            resolution = pixel_perfect_resolution(image.shape[:2], (p.height, p.width), resize_mode)
        subseed = seed if int(p.subseed) == -1 else max(int(p.subseed), 0)  # the extension's numpy seed
        rng = np.random.RandomState((seed + subseed) & 0xFFFFFFFF)
        try:
            control_map = preprocessor.run(image if preprocessor.needs_mask else image[..., :3], resolution, a, b, rng,
                                           folders=folders)
        except (ValueError, FileNotFoundError, ImportError) as e:
            raise ParamError(f"{where}.module", f"{where}.module={unit.module!r}: {e}") from e
        prepared.append(PreparedUnit(unit, controlnet, title, control_map, resize_mode, (resolution, a, b)))
    return prepared


def _input_image(unit: ControlNetUnit, p: GenerationParams, where: str) -> tuple[np.ndarray, str]:
    """(H, W, 4) uint8 (RGB + mask) and the resize mode: the unit's image, else (img2img) the init
    image with the job's mask and resize mode (3, "latent upscale", resizes plainly)."""
    if unit.image is not None:
        return unit.image_with_mask(), unit.resize_mode
    if not p.init_images:
        raise ParamError(f"{where}.image", f"{where}.image: none given, and txt2img has no init image to use")
    rgb = np.asarray(p.init_images[0].convert("RGB"))
    mask = np.asarray(p.mask.convert("L")) if p.mask is not None else np.zeros(rgb.shape[:2], np.uint8)
    if p.mask is not None and p.inpainting_mask_invert:
        mask = 255 - mask
    mode = RESIZE_MODES[p.resize_mode] if p.resize_mode < len(RESIZE_MODES) else JUST_RESIZE
    return np.concatenate([rgb, mask[..., None]], axis=2), mode


def model_title(path: str) -> str:
    """The extension's "stem [hash8]" for a file; a folder's or shipped model's name alone."""
    if os.path.isdir(path):
        return os.path.basename(os.path.normpath(path))
    from ..loaders.hashes import legacy_model_hash

    return f"{os.path.splitext(os.path.basename(path))[0]} [{legacy_model_hash(path)}]"


def infotext_entries(prepared: Sequence[PreparedUnit]) -> dict:
    return {f"ControlNet {i}": unit.infotext for i, unit in enumerate(prepared)}
