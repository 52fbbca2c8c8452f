"""Noise schedules: the model's discrete sigmas and the sigma sequences samplers step through.

Each ``get_sigmas_*`` returns ``n + 1`` decreasing sigmas ending in 0 (k-diffusion's convention).
"""
from __future__ import annotations

import math

import torch


def discrete_sigmas(betas: torch.Tensor) -> torch.Tensor:
    """sigma_t = sqrt((1 - alphabar_t) / alphabar_t) for each training timestep (Ho et al. 2020 -> VE form)."""
    alphas_cumprod = torch.cumprod(1.0 - betas.double(), dim=0)
    return ((1 - alphas_cumprod) / alphas_cumprod).sqrt()


def scaled_linear_betas(beta_start: float = 0.00085, beta_end: float = 0.012, steps: int = 1000) -> torch.Tensor:
    """SD1.x/SD2.x/SDXL's 'scaled_linear' schedule: betas linear in sqrt space."""
    return torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float64) ** 2


def betas_from_config(config: dict) -> torch.Tensor:
    kind = config.get("beta_schedule", "scaled_linear")
    start, end, steps = config.get("beta_start", 0.00085), config.get("beta_end", 0.012), config.get("num_train_timesteps", 1000)
    if kind == "scaled_linear":
        return scaled_linear_betas(start, end, steps)
    if kind == "linear":
        return torch.linspace(start, end, steps, dtype=torch.float64)
    raise ValueError(f"scheduler config: beta_schedule={kind!r} is not supported; expected 'scaled_linear' or 'linear'")


def append_zero(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, x.new_zeros([1])])


def get_sigmas_karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. 2022, eq. 5: sigmas evenly spaced in sigma^(1/rho)."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    min_inv, max_inv = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return append_zero((max_inv + ramp * (min_inv - max_inv)) ** rho)


def get_sigmas_exponential(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Sigmas evenly spaced in log sigma."""
    return append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64).exp())
