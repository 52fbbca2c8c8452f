"""Classifier-free guidance over a batch of images, with A1111's composable diffusion.

Guidance is Ho & Salimans 2022 (uncond + scale * (cond - uncond)) generalised to AND sub-prompts
by Liu et al. 2022 ("Compositional Visual Generation with Composable Diffusion Models"):
uncond + scale * sum_k w_k (cond_k - uncond), one fused pass in ``sdrt.kernels.cfg_combine``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from .. import kernels
from .batching import PER_IMAGE, WHOLE_BATCH, BatchPolicy
from .denoiser import Interrupted, Skipped
from .unet_inputs import COND, UNCOND, ExtraInput, UNetCall, UNetRow, merge_extras


def pad_to_length(t: torch.Tensor, length: int) -> torch.Tensor:
    """Extend (T, D) to (length, D) by repeating the last vector (A1111's AND-batch padding)."""
    if t.shape[0] == length:
        return t
    return torch.cat([t, t[-1:].expand(length - t.shape[0], -1)])


def _stack_padded(tensors: Sequence[torch.Tensor], length: int) -> torch.Tensor:
    return torch.stack([pad_to_length(t, length) for t in tensors])


class CFGDenoiser:
    """Guidance for one sampler batch. `batch[i]` is image i's conditioning: ``conds`` (AND
    sub-prompts, each scheduled over the steps), ``weights`` and ``uncond`` (duck-typed; see
    sdrt.prompt.conditioning.ImageConditioning). Each call advances the prompt schedules by one,
    as A1111 counts model calls (two-stage samplers move through them twice as fast, as there).

    An image's conds and uncond go through the UNet together when their token lengths agree, else
    in two calls (A1111's default); `policy` groups images into calls (sampling.batching).
    `extra_inputs` add per-row UNet inputs (sampling.unet_inputs). Inpainting: after each call the
    prediction keeps `init_latent` where `keep_mask` is 1. `image_cond` (B, k, h, w): an inpainting
    UNet's extra channels per image, the same for its conds and uncond (A1111).
    """

    def __init__(self, inner, batch: Sequence, cfg_scale: float, *,
                 init_latent: torch.Tensor | None = None, keep_mask: torch.Tensor | None = None,
                 should_stop: Callable[[], bool] | None = None, should_skip: Callable[[], bool] | None = None,
                 policy: BatchPolicy | None = None, batch_invariant: bool = False,
                 image_cond: torch.Tensor | None = None, extra_inputs: Sequence[ExtraInput] = ()):
        self.inner, self.batch, self.cfg_scale = inner, list(batch), float(cfg_scale)
        self.policy = policy or (PER_IMAGE if batch_invariant else WHOLE_BATCH)
        self.step = 0
        self.init_latent, self.keep_mask, self.image_cond = init_latent, keep_mask, image_cond
        self.should_stop, self.should_skip = should_stop, should_skip
        self.extra_inputs = list(extra_inputs)
        self.last_denoised: torch.Tensor | None = None  # what an interrupted run returns (A1111)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if self.should_stop is not None and self.should_stop():
            raise Interrupted
        if self.should_skip is not None and self.should_skip():
            raise Skipped
        step, self.step = self.step, self.step + 1
        if len(self.batch) != x.shape[0]:
            raise ValueError(f"CFGDenoiser: {len(self.batch)} conditionings for a batch of {x.shape[0]}")
        ic = self.image_cond
        groups = self.policy.groups(len(self.batch))
        parts = [self._guided(x[g], sigma[g], g.start, step, None if ic is None else ic[g]) for g in groups]
        denoised = parts[0] if len(parts) == 1 else torch.cat(parts)
        if self.keep_mask is not None:
            denoised = torch.lerp(self.init_latent.to(denoised), denoised, 1 - self.keep_mask.to(denoised))
        self.last_denoised = denoised
        return denoised

    def _unet(self, x, sigma, ctx, image_cond, rows, step):
        extras = merge_extras(self.extra_inputs, UNetCall(x, sigma, tuple(rows), step)) if self.extra_inputs else None
        if extras is None:
            return self.inner(x, sigma, ctx, image_cond)
        return self.inner(x, sigma, ctx, image_cond, extras)

    def _guided(self, x: torch.Tensor, sigma: torch.Tensor, first: int, step: int,
                image_cond: torch.Tensor | None) -> torch.Tensor:
        batch = self.batch[first:first + x.shape[0]]
        owners = [i for i, ic in enumerate(batch) for _ in ic.conds]
        cond_rows = [UNetRow(first + i, COND, k) for i, ic in enumerate(batch) for k in range(len(ic.conds))]
        uncond_rows = [UNetRow(first + i, UNCOND) for i in range(len(batch))]
        conds = [c.at(step) for ic in batch for c in ic.conds]
        cond_len = max(t.shape[0] for t in conds)
        if self.cfg_scale == 1.0 and all(ic.weights == [1.0] for ic in batch):
            # uncond + 1 * (cond - uncond) == cond: skip the uncond exactly
            return self._unet(x, sigma, _stack_padded(conds, cond_len), image_cond, cond_rows, step)
        unconds = [ic.uncond.at(step) for ic in batch]
        uncond_len = max(t.shape[0] for t in unconds)
        if self.policy.single_call:
            cond_len = uncond_len = max(cond_len, uncond_len)
        cond_ctx, uncond_ctx = _stack_padded(conds, cond_len), _stack_padded(unconds, uncond_len)
        idx = torch.tensor(owners, device=x.device)
        x_cond, s_cond = x[idx], sigma[idx]
        ic_cond = None if image_cond is None else image_cond[idx]
        if cond_len == uncond_len:
            ic_all = None if image_cond is None else torch.cat([ic_cond, image_cond])
            out = self._unet(torch.cat([x_cond, x]), torch.cat([s_cond, sigma]), torch.cat([cond_ctx, uncond_ctx]),
                             ic_all, cond_rows + uncond_rows, step)
            cond_out, uncond_out = out[: len(owners)], out[len(owners):]
        else:
            cond_out = self._unet(x_cond, s_cond, cond_ctx, ic_cond, cond_rows, step)
            uncond_out = self._unet(x, sigma, uncond_ctx, image_cond, uncond_rows, step)
        return self._combine(batch, cond_out, uncond_out)

    def _combine(self, batch, cond_out: torch.Tensor, uncond_out: torch.Tensor) -> torch.Tensor:
        results, row = [], 0
        for i, ic in enumerate(batch):
            k = len(ic.conds)
            results.append(kernels.cfg_combine(uncond_out[i].contiguous(), cond_out[row:row + k].contiguous(),
                                               ic.weights, self.cfg_scale))
            row += k
        return torch.stack(results)
