"""LCM: Latent Consistency Models (Luo et al. 2023), as A1111's "LCM" sampler runs them.

An LCM (or an LCM-LoRA on a normal model) is distilled on 50 "original" timesteps (every 20th of
the 1000 training steps, 19 ... 999) and predicts with the consistency boundary condition
``f(x, t) = c_skip(t) x + c_out(t) x0(x, t)`` (Song et al. 2023, consistency models, eq. 7 with
sigma_data 0.5 and the timestep scaled by 10). A1111 (modules/sd_samplers_lcm.py) wraps the model
in an LCMCompVisDenoiser that lives on those 50 timesteps, and samples with
``x = f(x, sigma_i) + sigma_{i+1} * noise`` — the LCM multistep sampler (Luo et al., Alg. 1) in
k-diffusion's sigma space.
"""
from __future__ import annotations

import torch

from .. import kernels
from .denoiser import DiscreteEpsDenoiser
from .samplers import Callback, Denoiser, NoiseSource, _noise_source, _report, _sigma_batch
from .schedules import append_zero

ORIGINAL_TIMESTEPS = 50  # the LCM distillation schedule (A1111's "LCM Original Timesteps")
SIGMA_DATA = 0.5
TIMESTEP_SCALING = 10.0


class LCMDenoiser(DiscreteEpsDenoiser):
    """The epsilon model seen on LCM's 50 original timesteps (A1111 LCMCompVisDenoiser).

    ``sigmas`` are the model's sigmas at timesteps skip-1, 2*skip-1, ..., T-1 (skip = T / 50);
    ``sigma_to_t`` rounds to the nearest of them and returns its training timestep; ``t_to_sigma``
    interpolates log-sigma between them; the prediction carries the boundary condition.
    """

    def __init__(self, unet, model_sigmas: torch.Tensor, prediction_type: str = "epsilon"):
        total = len(model_sigmas)
        self.skip_steps = total // ORIGINAL_TIMESTEPS
        if self.skip_steps < 1:
            raise ValueError(f"LCM needs at least {ORIGINAL_TIMESTEPS} training timesteps; the model has {total}")
        valid = model_sigmas[total - 1 - self.skip_steps * torch.arange(ORIGINAL_TIMESTEPS - 1, -1, -1)]
        super().__init__(unet, valid, prediction_type)

    @classmethod
    def wrapping(cls, base: DiscreteEpsDenoiser) -> "LCMDenoiser":
        """The same UNet, seen through LCM's timesteps (the base denoiser holds all of the model's)."""
        return cls(base.unet, base.sigmas, base.prediction_type)

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        dists = sigma.float().log() - self.log_sigmas[:, None]
        index = dists.abs().argmin(dim=0).view(sigma.shape)
        return index * self.skip_steps + (self.skip_steps - 1)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        index = ((t.float() - (self.skip_steps - 1)) / self.skip_steps).clamp(0, len(self.sigmas) - 1)
        return super().t_to_sigma(index)

    def get_sigmas(self, n: int) -> torch.Tensor:
        """A1111's LCM 'Automatic'/'Uniform': n timesteps evenly from the last original one to the first."""
        start = float(self.sigma_to_t(torch.tensor(self.sigma_max)))
        end = float(self.sigma_to_t(torch.tensor(self.sigma_min)))
        return append_zero(self.t_to_sigma(torch.linspace(start, end, n))).double()

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor,
                 image_cond: torch.Tensor | None = None, extras: dict | None = None) -> torch.Tensor:
        x0 = super().__call__(x, sigma, context, image_cond, extras)  # x - sigma * eps, the UNet at the rounded timestep
        scaled_t = self.sigma_to_t(sigma.float()).to(x.dtype).view(-1, 1, 1, 1) * TIMESTEP_SCALING
        c_skip = SIGMA_DATA**2 / (scaled_t**2 + SIGMA_DATA**2)
        c_out = scaled_t / (scaled_t**2 + SIGMA_DATA**2) ** 0.5
        # A1111 applies c_skip to its (k-diffusion scaled) input, where diffusers' LCMScheduler uses
        # the VP sample; c_skip <= 7e-6 at t >= 19, so the two agree far below fp16 resolution.
        return c_out * x0 + c_skip * x


@torch.no_grad()
def sample_lcm(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback = None,
               noise: NoiseSource = None) -> torch.Tensor:
    """LCM multistep sampling (Luo et al. 2023, Alg. 1; A1111 sample_lcm): predict the clean
    latent, then re-noise it to the next sigma with fresh noise."""
    draw = _noise_source(noise, x)
    s = sigmas.tolist()
    for i in range(len(s) - 1):
        denoised = denoiser(x, _sigma_batch(x, s[i]))
        _report(callback, i, len(s) - 1, x, s[i], denoised)
        x = kernels.linear_combination([denoised.contiguous(), draw()], [1.0, s[i + 1]]) if s[i + 1] > 0 else denoised
    return x
