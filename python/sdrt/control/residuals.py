"""ControlNet residuals as extra UNet inputs (sampling.unet_inputs): each call, the units active
at that step run their ControlNet on the UNet's own input (a late input, resolved by the
denoiser), scale its residuals and sum them, as diffusers' MultiControlNetModel sums them.

Per unit: `weight` times the control mode's soft weights (one per residual, sdrt.control.units),
rows masked to the conditional half for "ControlNet is more important" (the extension's cfg
injection), and the unit's guidance window over the sampling steps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ..sampling.unet_inputs import COND, LATE, ModelInput, UNetCall


@dataclass(frozen=True)
class ActiveControl:
    """One unit ready for a pass: its ControlNet, control image (1, 3, H, W) in [0, 1] (-1 where an
    inpaint unit's mask is) at the pass's size, per-residual scales, and its window."""
    controlnet: object
    hint: torch.Tensor
    scales: tuple[float, ...]      # weight * soft weight, one per residual (down blocks, then mid)
    cond_only: bool
    start: float
    end: float

    def active_at(self, step: int, total: int) -> bool:
        """The extension's rule: a unit runs while the sampling progress is inside its window."""
        progress = step / max(total, 1)
        return self.start <= progress <= self.end


@dataclass
class ControlNetInputs:
    """The ExtraInput of one sampler run's ControlNet units; `backend` runs the ControlNets.

    The window is judged on A1111's sampling step: 0 when the run starts, then the index of the
    last step the sampler reported (its callback), so step i's model calls see i - 1 (and every
    call of a two-stage step sees the same number); `total_steps`: the run's sampler steps."""
    units: Sequence[ActiveControl]
    total_steps: int
    backend: object
    sampling_step: int = 0

    def on_step(self, info: dict) -> None:
        """The sampler's per-step callback (A1111's callback_state)."""
        self.sampling_step = int(info["i"])

    def __call__(self, call: UNetCall) -> dict:
        active = [u for u in self.units if u.active_at(self.sampling_step, self.total_steps)]
        if not active:
            return {}
        return {LATE: [_Residuals(active, call.rows, self.backend)]}


@dataclass(frozen=True)
class _Residuals:
    units: Sequence[ActiveControl]
    rows: tuple
    backend: object

    def resolve(self, model_input: ModelInput) -> dict:
        down_sum: Optional[list] = None
        mid_sum: Optional[torch.Tensor] = None
        cond_rows = torch.tensor([r.kind == COND for r in self.rows], dtype=torch.float32)
        # a cond-only unit adds nothing to a call of uncond rows only (cond and uncond of unequal
        # token lengths go separately): skipped, x + 0 == x
        units = [u for u in self.units if not (u.cond_only and not cond_rows.any())]
        if not units:
            return {}
        for unit in units:
            hint = unit.hint.expand(len(self.rows), -1, -1, -1)
            down, mid = self.backend.controlnet_forward(unit.controlnet, model_input.x, model_input.timestep,
                                                        model_input.context, hint, model_input.extras)
            mask = cond_rows.to(mid.device).view(-1, 1, 1, 1) if unit.cond_only else None
            down = [_scaled(d, s, mask) for d, s in zip(down, unit.scales[:-1], strict=True)]
            mid = _scaled(mid, unit.scales[-1], mask)
            down_sum = down if down_sum is None else [a + b for a, b in zip(down_sum, down)]
            mid_sum = mid if mid_sum is None else mid_sum + mid
        return {"down_block_additional_residuals": down_sum, "mid_block_additional_residual": mid_sum}


def _scaled(residual: torch.Tensor, scale: float, mask: Optional[torch.Tensor]) -> torch.Tensor:
    out = residual * scale
    return out if mask is None else out * mask
