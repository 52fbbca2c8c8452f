"""Extra UNet inputs per model call: the extension point for ControlNet residuals, motion-module
frame batches and the like.

The guidance step (sampling.guidance) stacks an image's conds and its uncond into one UNet batch;
each row of that batch is described by a `UNetRow` (which image of the sampler batch, cond or
uncond, which AND sub-prompt). An `ExtraInput` sees the rows of every call and returns keyword
inputs for the backend's ``unet_forward(..., extras)``, one entry per row along dim 0, so a
provider can target cond rows, uncond rows or both. Several providers' extras are merged by adding
tensors under the same key (how diffusers sums the residuals of several ControlNets)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Sequence

import torch

COND, UNCOND = "cond", "uncond"


@dataclass(frozen=True)
class UNetRow:
    image: int        # index of the image in the sampler's batch
    kind: str         # COND or UNCOND
    part: int = 0     # which AND sub-prompt (conds only)


@dataclass(frozen=True)
class UNetCall:
    """What an extra input may look at: the call's (unscaled) latents, sigmas and rows, and the
    guidance step (A1111 counts model calls)."""
    x: torch.Tensor
    sigma: torch.Tensor
    rows: tuple[UNetRow, ...]
    step: int


class ExtraInput(Protocol):
    def __call__(self, call: UNetCall) -> dict: ...


def merge_extras(providers: Sequence[ExtraInput], call: UNetCall) -> Optional[dict]:
    """The providers' extras for one call; tensors under the same key are added, lists of tensors
    (diffusers' down-block residuals) element by element. None when there is nothing."""
    merged: dict = {}
    for provider in providers:
        for key, value in provider(call).items():
            if key not in merged:
                merged[key] = value
            elif isinstance(value, (list, tuple)):
                merged[key] = [a + b for a, b in zip(merged[key], value, strict=True)]
            else:
                merged[key] = merged[key] + value
    return merged or None
