"""Samplers: stateless functions in the k-diffusion style, stepping with sdrt's fused kernels.

``sample_x(denoiser, x, sigmas, *, callback=None, noise=None, ...) -> x`` where ``denoiser(x, sigma)``
returns the denoised prediction and ``noise()`` returns fresh noise shaped like ``x`` (per-image
generators in the pipeline, so a seed means the same picture on any machine).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .. import kernels

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Optional[Callable[[dict], None]]
NoiseSource = Optional[Callable[[], torch.Tensor]]


def _sigma_batch(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return torch.full((x.shape[0],), sigma, dtype=torch.float32, device=x.device)


def _report(callback: Callback, i: int, x: torch.Tensor, sigma: float, denoised: torch.Tensor) -> None:
    if callback is not None:
        callback({"i": i, "x": x, "sigma": sigma, "denoised": denoised})


@torch.no_grad()
def sample_euler(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback = None,
                 noise: NoiseSource = None) -> torch.Tensor:
    """Euler (Karras et al. 2022, Alg. 2 without churn)."""
    s = sigmas.tolist()
    x = x.clone()  # the steps update x in place; the caller's tensor stays as it was
    for i in range(len(s) - 1):
        denoised = denoiser(x, _sigma_batch(x, s[i]))
        _report(callback, i, x, s[i], denoised)
        x = kernels.euler_step(x, denoised.contiguous(), s[i], s[i + 1], out=x)
    return x


@torch.no_grad()
def sample_euler_ancestral(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback = None,
                           noise: NoiseSource = None, eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    """Euler ancestral (k-diffusion sample_euler_ancestral): Euler to sigma_down, renoise by sigma_up."""
    if noise is None:
        noise = lambda: torch.randn_like(x)  # noqa: E731
    s = sigmas.tolist()
    x = x.clone()
    for i in range(len(s) - 1):
        denoised = denoiser(x, _sigma_batch(x, s[i]))
        _report(callback, i, x, s[i], denoised)
        if s[i + 1] > 0:
            x = kernels.euler_ancestral_step(x, denoised.contiguous(), noise().to(x).contiguous(), s[i], s[i + 1],
                                             eta=eta, s_noise=s_noise, out=x)
        else:
            x = denoised
    return x


@torch.no_grad()
def sample_dpmpp_2m(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback = None,
                    noise: NoiseSource = None) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022; k-diffusion sample_dpmpp_2m)."""
    s = sigmas.tolist()
    x = x.clone()
    old = None
    for i in range(len(s) - 1):
        denoised = denoiser(x, _sigma_batch(x, s[i])).contiguous()
        _report(callback, i, x, s[i], denoised)
        x = kernels.dpmpp_2m_step(x, denoised, s[i], s[i + 1], old_denoised=old,
                                  sigma_prev=s[i - 1] if old is not None else None, out=x)
        old = denoised
    return x
