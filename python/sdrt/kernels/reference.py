"""The fused kernels' math written as plain torch ops, in the k-diffusion formulation.

This is the readable statement of what each kernel computes; tests compare the kernels against it
(in float64) and against diffusers' schedulers, and ``bench/`` uses it as the unfused baseline.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch


def linear_combination(inputs: Sequence[torch.Tensor], weights: Sequence[float], bias: float = 0.0) -> torch.Tensor:
    out = torch.full_like(inputs[0], bias)
    for t, w in zip(inputs, weights):
        out = out + w * t
    return out


def cfg_combine(uncond: torch.Tensor, conds: torch.Tensor, weights: Sequence[float], cfg_scale: float) -> torch.Tensor:
    out = uncond.clone()
    for cond, w in zip(conds, weights):
        out = out + (cond - uncond) * (w * cfg_scale)
    return out


def euler_step(x: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    d = (x - denoised) / sigma
    return x + d * (sigma_next - sigma)


def ancestral_step_sigmas(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    if not eta:
        return sigma_next, 0.0
    sigma_up = min(sigma_next, eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5)
    sigma_down = (sigma_next**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def euler_ancestral_step(x: torch.Tensor, denoised: torch.Tensor, noise: torch.Tensor, sigma: float,
                         sigma_next: float, eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    sigma_down, sigma_up = ancestral_step_sigmas(sigma, sigma_next, eta)
    d = (x - denoised) / sigma
    x = x + d * (sigma_down - sigma)
    return x + noise * s_noise * sigma_up


def dpmpp_2m_step(x: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_next: float,
                  old_denoised: torch.Tensor | None = None, sigma_prev: float | None = None) -> torch.Tensor:
    if sigma_next == 0:
        return denoised.clone()
    t, t_next = -math.log(sigma), -math.log(sigma_next)
    h = t_next - t
    if old_denoised is None:
        return (sigma_next / sigma) * x - math.expm1(-h) * denoised
    h_last = t + math.log(sigma_prev)
    r = h_last / h
    denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
    return (sigma_next / sigma) * x - math.expm1(-h) * denoised_d


def scale_latents(x: torch.Tensor, scaling_factor: float, shift_factor: float = 0.0) -> torch.Tensor:
    return (x - shift_factor) * scaling_factor


def unscale_latents(x: torch.Tensor, scaling_factor: float, shift_factor: float = 0.0) -> torch.Tensor:
    return x / scaling_factor + shift_factor


def to_rgb_uint8(x: torch.Tensor, matrix: Sequence[Sequence[float]] | None = None,
                 bias: Sequence[float] | None = None, round: bool = False) -> torch.Tensor:  # noqa: A002
    x = x.float()
    if matrix is not None:
        m = torch.tensor(matrix, dtype=x.dtype, device=x.device)
        x = torch.einsum("nchw,cr->nrhw", x, m)
    if bias is not None:
        x = x + torch.tensor(bias, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    x = ((x + 1) / 2).clamp(0, 1) * 255
    x = x.round() if round else x
    return x.permute(0, 2, 3, 1).to(torch.uint8).contiguous()
