"""Extra UNet inputs per model call: the extension point for ControlNet residuals, motion-module
frame batches and the like.

The guidance step (sampling.guidance) stacks an image's conds and its uncond into one UNet batch;
each row of that batch is described by a `UNetRow` (which image of the sampler batch, cond or
uncond, which AND sub-prompt). An `ExtraInput` sees the rows of every call and returns keyword
inputs for the backend's ``unet_forward(..., extras)``, one entry per row along dim 0, so a
provider can target cond rows, uncond rows or both. Several providers' extras are merged by adding
tensors under the same key (how diffusers sums the residuals of several ControlNets).

Inputs computed from the UNet's own input (a ControlNet reads the scaled latents, timesteps and
context of the call) are returned as `LateInput`s under the LATE key: the denoiser resolves them
once it has made that input (`resolve_late`)."""
from __future__ import annotations

from dataclasses import dataclass, replace
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


LATE = "late_inputs"


@dataclass(frozen=True)
class ModelInput:
    """The UNet call as the model sees it, row for row: latents scaled by c_in (without an
    inpainting UNet's extra channels), fractional timesteps and context, and the call's other
    extra inputs (an SDXL ControlNet takes the UNet's added_cond_kwargs)."""
    x: torch.Tensor
    timestep: torch.Tensor
    context: torch.Tensor
    extras: Optional[dict] = None


class LateInput(Protocol):
    def resolve(self, model_input: ModelInput) -> dict: ...


def resolve_late(extras: Optional[dict], model_input: ModelInput) -> Optional[dict]:
    """`extras` with its LateInputs replaced by what they resolve to (merged as merge_extras does)."""
    if not extras or LATE not in extras:
        return extras
    rest = {k: v for k, v in extras.items() if k != LATE}
    model_input = replace(model_input, extras=rest)
    resolved = [late.resolve(model_input) for late in extras[LATE]]
    return _merge([rest, *resolved]) or None


def merge_extras(providers: Sequence[ExtraInput], call: UNetCall) -> Optional[dict]:
    """The providers' extras for one call; tensors under the same key are added, lists of tensors
    (diffusers' down-block residuals) element by element. None when there is nothing."""
    return _merge([provider(call) for provider in providers]) or None


def _merge(parts: Sequence[dict]) -> dict:
    merged: dict = {}
    for part in parts:
        for key, value in part.items():
            if key == LATE:
                merged[LATE] = list(merged.get(LATE, ())) + list(value)
            elif key not in merged:
                merged[key] = value
            elif isinstance(value, (list, tuple)):
                merged[key] = [a + b for a, b in zip(merged[key], value, strict=True)]
            else:
                merged[key] = merged[key] + value
    return merged
