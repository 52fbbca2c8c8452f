"""The denoiser: a UNet backend wrapped with the epsilon-model scalings and classifier-free guidance.

Follows k-diffusion's DiscreteEpsDDPMDenoiser (CompVisDenoiser), which A1111 uses: the UNet sees
``x * c_in`` with ``c_in = 1 / sqrt(sigma^2 + 1)`` at the (interpolated, not quantised) timestep of
``sigma``, and ``denoised = x - sigma * eps``. Guidance is A1111's composable-diffusion combine,
one fused pass in ``sdrt.kernels.cfg_combine``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from .. import kernels
from ..prompt.conditioning import pad_to_length
from .schedules import append_zero


class DiscreteEpsDenoiser:
    """Maps sigma <-> the model's discrete timesteps and runs an epsilon- or v-prediction UNet."""

    def __init__(self, unet, model_sigmas: torch.Tensor, prediction_type: str = "epsilon"):
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type={prediction_type!r}; supported: 'epsilon', 'v_prediction'")
        self.unet = unet  # callable (x, timestep, context) -> eps | v
        self.prediction_type = prediction_type
        self.sigmas = model_sigmas.float()
        self.log_sigmas = self.sigmas.log()

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Fractional timestep whose log-sigma interpolates `sigma` (k-diffusion, quantize=False)."""
        log_sigma = sigma.float().log()
        dists = log_sigma - self.log_sigmas[:, None]
        low = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=self.log_sigmas.shape[0] - 2)
        lo, hi = self.log_sigmas[low], self.log_sigmas[low + 1]
        w = ((lo - log_sigma) / (lo - hi)).clamp(0, 1)
        return ((1 - w) * low + w * (low + 1)).view(sigma.shape)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = t.float()
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()

    def get_sigmas(self, n: int) -> torch.Tensor:
        """The model's own discretisation (A1111 'Automatic' for most samplers): n timesteps evenly
        spaced from the last training step to the first."""
        t = torch.linspace(len(self.sigmas) - 1, 0, n)
        return append_zero(self.t_to_sigma(t)).double()

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor,
                 image_cond: torch.Tensor | None = None) -> torch.Tensor:
        """`image_cond`: extra UNet input channels after the latents (an inpainting UNet's mask and
        masked-image latents, LDM's c_concat), not scaled by c_in."""
        sigma = sigma.to(x.dtype)
        c_in = (sigma**2 + 1) ** -0.5
        x_in = x * c_in.view(-1, 1, 1, 1)
        if image_cond is not None:
            x_in = torch.cat([x_in, image_cond.to(x_in)], dim=1)
        out = self.unet(x_in, self.sigma_to_t(sigma), context)
        sigma = sigma.view(-1, 1, 1, 1)
        if self.prediction_type == "v_prediction":
            # k-diffusion DiscreteVDDPMDenoiser (Salimans & Ho 2022, v = alpha eps - sigma_vp x0; sigma_data 1)
            return x / (sigma**2 + 1) - out * sigma * (sigma**2 + 1) ** -0.5
        return x - out * sigma


class Interrupted(Exception):
    """Raised inside the sampler loop when the caller asked to stop (A1111's interrupt)."""


class Skipped(Interrupted):
    """Raised inside the sampler loop when the caller asked to skip the current batch (A1111's skip)."""


class CFGDenoiser:
    """Classifier-free guidance with A1111's composable diffusion over a batch of images.

    Each image has AND sub-prompts (with weights) and a negative prompt, each scheduled over the
    steps (prompt editing); each call advances the schedule by one, as A1111 counts model calls
    (so two-stage samplers move through it twice as fast, as there). The conds and unconds in
    effect go through the UNet together when their token lengths agree, else in two calls (A1111's
    default), and each image is combined in one fused pass (sdrt.kernels.cfg_combine).

    batch_invariant: each image goes through the UNet in its own call (its conds and uncond
    together), so an image of a batch is bit-identical to the same seed run alone: batched
    convolutions and matmuls round differently from single ones, and padding to the batch's longest
    prompt changes the attention. False batches every image into one call (faster on a GPU).
    """

    def __init__(self, inner: DiscreteEpsDenoiser, batch: Sequence, cfg_scale: float, *,
                 init_latent: torch.Tensor | None = None, keep_mask: torch.Tensor | None = None,
                 should_stop: Callable[[], bool] | None = None, batch_invariant: bool = False,
                 image_cond: torch.Tensor | None = None, should_skip: Callable[[], bool] | None = None):
        self.inner, self.batch, self.cfg_scale = inner, list(batch), float(cfg_scale)
        self.batch_invariant = batch_invariant
        self.step = 0  # A1111 counts model calls, not sampler steps, for prompt schedules
        # Inpainting: after each call the prediction keeps the init latent where keep_mask is 1.
        self.init_latent, self.keep_mask = init_latent, keep_mask
        # (B, k, h, w) extra UNet input per image (inpainting UNets: mask + masked-image latents);
        # conds and uncond of an image get the same (A1111)
        self.image_cond = image_cond
        self.should_stop, self.should_skip = should_stop, should_skip
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
        if self.batch_invariant and len(self.batch) > 1:
            denoised = torch.cat([self._guided(x[i:i + 1], sigma[i:i + 1], self.batch[i:i + 1], step,
                                               None if ic is None else ic[i:i + 1])
                                  for i in range(len(self.batch))])
        else:
            denoised = self._guided(x, sigma, self.batch, step, ic)
        if self.keep_mask is not None:
            denoised = torch.lerp(self.init_latent.to(denoised), denoised, 1 - self.keep_mask.to(denoised))
        self.last_denoised = denoised
        return denoised

    def _guided(self, x: torch.Tensor, sigma: torch.Tensor, batch: list, step: int,
                image_cond: torch.Tensor | None) -> torch.Tensor:
        owners = [i for i, ic in enumerate(batch) for _ in ic.conds]
        conds = [c.at(step) for ic in batch for c in ic.conds]
        cond_len = max(t.shape[0] for t in conds)
        cond_ctx = torch.stack([pad_to_length(t, cond_len) for t in conds])
        if self.cfg_scale == 1.0 and all(ic.weights == [1.0] for ic in batch):
            return self.inner(x, sigma, cond_ctx, image_cond)  # uncond + 1 * (cond - uncond) == cond: skip uncond exactly
        unconds = [ic.uncond.at(step) for ic in batch]
        uncond_len = max(t.shape[0] for t in unconds)
        uncond_ctx = torch.stack([pad_to_length(t, uncond_len) for t in unconds])
        idx = torch.tensor(owners, device=x.device)
        x_cond, s_cond = x[idx], sigma[idx]
        ic_cond = None if image_cond is None else image_cond[idx]
        if cond_len == uncond_len:
            ic_all = None if image_cond is None else torch.cat([ic_cond, image_cond])
            out = self.inner(torch.cat([x_cond, x]), torch.cat([s_cond, sigma]), torch.cat([cond_ctx, uncond_ctx]),
                             ic_all)
            cond_out, uncond_out = out[: len(owners)], out[len(owners):]
        else:
            cond_out = self.inner(x_cond, s_cond, cond_ctx, ic_cond)
            uncond_out = self.inner(x, sigma, uncond_ctx, image_cond)
        results, row = [], 0
        for i, ic in enumerate(batch):
            k = len(ic.conds)
            results.append(kernels.cfg_combine(uncond_out[i].contiguous(), cond_out[row:row + k].contiguous(),
                                               ic.weights, self.cfg_scale))
            row += k
        return torch.stack(results)
