"""The denoiser: a UNet backend wrapped with the epsilon- or v-model scalings.

Follows k-diffusion's DiscreteEpsDDPMDenoiser (CompVisDenoiser), which A1111 uses: the UNet sees
``x * c_in`` with ``c_in = 1 / sqrt(sigma^2 + 1)`` at the (interpolated, not quantised) timestep of
``sigma``, and ``denoised = x - sigma * eps``. Guidance is in sampling.guidance.
"""
from __future__ import annotations

import torch

from .schedules import append_zero
from .unet_inputs import ModelInput, resolve_late


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
                 image_cond: torch.Tensor | None = None, extras: dict | None = None) -> torch.Tensor:
        """`image_cond`: extra UNet input channels after the latents (an inpainting UNet's mask and
        masked-image latents, LDM's c_concat), not scaled by c_in. `extras`: keyword inputs for the
        backend's unet_forward (sampling.unet_inputs), one entry per row; late ones are resolved on
        the scaled latents, timesteps and context of this call."""
        sigma = sigma.to(x.dtype)
        c_in = (sigma**2 + 1) ** -0.5
        x_in = x * c_in.view(-1, 1, 1, 1)
        t = self.sigma_to_t(sigma)
        extras = resolve_late(extras, ModelInput(x_in, t, context))
        if image_cond is not None:
            x_in = torch.cat([x_in, image_cond.to(x_in)], dim=1)
        out = self.unet(x_in, t, context) if not extras else self.unet(x_in, t, context, extras)
        sigma = sigma.view(-1, 1, 1, 1)
        if self.prediction_type == "v_prediction":
            # k-diffusion DiscreteVDDPMDenoiser (Salimans & Ho 2022, v = alpha eps - sigma_vp x0; sigma_data 1)
            return x / (sigma**2 + 1) - out * sigma * (sigma**2 + 1) ** -0.5
        return x - out * sigma


class Interrupted(Exception):
    """Raised inside the sampler loop when the caller asked to stop (A1111's interrupt)."""


class Skipped(Interrupted):
    """Raised inside the sampler loop when the caller asked to skip the current batch (A1111's skip)."""
