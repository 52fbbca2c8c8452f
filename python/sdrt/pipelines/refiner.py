"""A1111's refiner (modules/sd_samplers_common.apply_refiner, processing_scripts/refiner.py): the
running sampler continues on a second model once the schedule is `refiner_switch_at` done.

Before every model call the completed share of the schedule is read off the sigma, as A1111 does
by default: (999 - t) / 1000 for the model timestep t nearest to the call's largest sigma. From the
first call where that reaches the switch point, the guided denoiser is the refiner's: its own UNet,
its own conditioning (recomputed with its text encoders, aesthetic scores for a refiner
checkpoint) and added inputs; the sampler, its history (DPM++ 2M's previous prediction, the
noise) and the latents carry on untouched, and so does the guidance's step count (prompt
editing). A switch at 1.0 never happens (the ratio is at most 0.999). The infotext gets "Refiner"
(the checkpoint's short title) and "Refiner switch at" when the switch happens. With the hires
fix the refiner runs in the hires pass only (A1111's default hires_fix_refiner_pass).
"""
from __future__ import annotations

from typing import Callable

import torch

from ..sampling.guidance import CFGDenoiser


def completed_ratio(model_sigmas: torch.Tensor, sigma: torch.Tensor) -> float:
    """A1111: (999 - t) / 1000 for the model timestep t whose sigma is nearest the largest of `sigma`."""
    t = int(torch.argmin(torch.abs(model_sigmas.to(sigma.device, torch.float32) - sigma.float().max())))
    return (len(model_sigmas) - 1 - t) / len(model_sigmas)


def short_title(info) -> str:
    """A1111's checkpoint short title: "name [hash10]"."""
    return f"{info.name} [{info.hash[:10]}]" if info.hash else info.name


class RefinerSwitch:
    """A guided denoiser that hands over to the refiner's once `switch_at` of the schedule is done.
    `make_refiner()` builds the refiner's CFGDenoiser (its conditioning is computed then, as A1111
    computes it at the switch); `on_switch()` records the infotext."""

    def __init__(self, base: CFGDenoiser, make_refiner: Callable[[], CFGDenoiser], switch_at: float,
                 model_sigmas: torch.Tensor, on_switch: Callable[[], None] = lambda: None):
        self.current, self.make_refiner, self.switch_at = base, make_refiner, float(switch_at)
        self.model_sigmas, self.on_switch = model_sigmas, on_switch
        self.switched = False

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if not self.switched and completed_ratio(self.model_sigmas, sigma) >= self.switch_at:
            refiner = self.make_refiner()
            refiner.step, refiner.last_denoised = self.current.step, self.current.last_denoised
            self.current, self.switched = refiner, True
            self.on_switch()
        return self.current(x, sigma)

    @property
    def last_denoised(self):
        return self.current.last_denoised
