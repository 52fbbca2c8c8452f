"""The denoiser: a UNet backend wrapped with the epsilon-model scalings and classifier-free guidance.

Follows k-diffusion's DiscreteEpsDDPMDenoiser (CompVisDenoiser), which A1111 uses: the UNet sees
``x * c_in`` with ``c_in = 1 / sqrt(sigma^2 + 1)`` at the (interpolated, not quantised) timestep of
``sigma``, and ``denoised = x - sigma * eps``. Guidance is A1111's composable-diffusion combine,
one fused pass in ``sdrt.kernels.cfg_combine``.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .. import kernels
from .schedules import append_zero


class DiscreteEpsDenoiser:
    """Maps sigma <-> the model's discrete timesteps and runs an epsilon-prediction UNet."""

    def __init__(self, unet, model_sigmas: torch.Tensor):
        self.unet = unet  # callable (x, timestep, context) -> eps
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

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        sigma = sigma.to(x.dtype)
        c_in = (sigma**2 + 1) ** -0.5
        eps = self.unet(x * c_in.view(-1, 1, 1, 1), self.sigma_to_t(sigma), context)
        return x - eps * sigma.view(-1, 1, 1, 1)


class CFGDenoiser:
    """Classifier-free guidance over a batch: one UNet call on [conds..., uncond] per image.

    `conds` is (B, K, T, D): K AND-sub-prompts per image with `weights` (K,); `uncond` is (B, T, D).
    """

    def __init__(self, inner: DiscreteEpsDenoiser, conds: torch.Tensor, uncond: torch.Tensor,
                 weights: Sequence[float], cfg_scale: float):
        if conds.shape[0] != uncond.shape[0] or conds.shape[1] != len(weights):
            raise ValueError(f"CFGDenoiser: conds {tuple(conds.shape)} / uncond {tuple(uncond.shape)} / "
                             f"{len(weights)} weights do not line up")
        self.inner, self.conds, self.uncond = inner, conds, uncond
        self.weights, self.cfg_scale = list(weights), float(cfg_scale)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        b, k = self.conds.shape[:2]
        if self.cfg_scale == 1.0 and k == 1 and self.weights[0] == 1.0:  # guidance is the identity: skip uncond
            return self.inner(x, sigma, self.conds[:, 0])
        x_in = torch.cat([x.repeat_interleave(k, 0), x])
        sigma_in = torch.cat([sigma.repeat_interleave(k, 0), sigma])
        context = torch.cat([self.conds.flatten(0, 1), self.uncond])
        out = self.inner(x_in, sigma_in, context)
        conds_out = out[: b * k].view(b, k, *x.shape[1:]).contiguous()
        uncond_out = out[b * k:].contiguous()
        return torch.stack([kernels.cfg_combine(uncond_out[i], conds_out[i], self.weights, self.cfg_scale)
                            for i in range(b)])
