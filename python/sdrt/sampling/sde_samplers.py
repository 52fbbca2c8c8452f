"""The SDE samplers of DPM-Solver++ (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling
of Diffusion Probabilistic Models") as k-diffusion writes them, with t = -log(sigma), h = t_next - t.

``noise_sampler(sigma, sigma_next)`` gives unit-variance noise for that interval (A1111 passes a
Brownian tree, sdrt.sampling.brownian); without one, ``noise()`` (or torch.randn_like) is used.
Every update is one fused ``kernels.linear_combination`` pass.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from .. import kernels
from .samplers import Callback, Denoiser, NoiseSource, _noise_source, _report, _sigma_batch

NoiseSampler = Optional[Callable[[float, float], torch.Tensor]]


def _interval_noise(noise_sampler: NoiseSampler, noise: NoiseSource, x: torch.Tensor):
    if noise_sampler is not None:
        return lambda a, b: noise_sampler(a, b).to(x).contiguous()
    draw = _noise_source(noise, x)
    return lambda a, b: draw()


@torch.no_grad()
def sample_dpmpp_sde(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback = None,
                     noise: NoiseSource = None, noise_sampler: NoiseSampler = None, eta: float = 1.0,
                     s_noise: float = 1.0, r: float = 0.5) -> torch.Tensor:
    """DPM-Solver++(2S) with ancestral noise at both stages (k-diffusion sample_dpmpp_sde): an
    intermediate point at t + r*h, then the step from the two predictions weighted 1 - 1/(2r), 1/(2r)."""
    s = sigmas.tolist()
    draw = _interval_noise(noise_sampler, noise, x)
    x = x.clone()
    fac = 1 / (2 * r)
    for i in range(len(s) - 1):
        denoised = denoiser(x, _sigma_batch(x, s[i])).contiguous()
        _report(callback, i, len(s) - 1, x, s[i], denoised)
        if s[i + 1] == 0:
            x = kernels.euler_step(x, denoised, s[i], 0.0, out=x)
            continue
        t, t_next = -math.log(s[i]), -math.log(s[i + 1])
        h = t_next - t
        s_mid = math.exp(-(t + h * r))
        down, up = kernels.ancestral_step_sigmas(s[i], s_mid, eta)
        # x at sigma_down: (sigma_down / sigma) x + (1 - sigma_down / sigma) denoised, i.e. k-diffusion's
        # exp(s' - t) x - expm1(t - s') denoised with s' = -log(sigma_down).
        x_2 = kernels.linear_combination([x, denoised, draw(s[i], s_mid)], [down / s[i], 1 - down / s[i], s_noise * up])
        denoised_2 = denoiser(x_2, _sigma_batch(x, s_mid)).contiguous()
        down, up = kernels.ancestral_step_sigmas(s[i], s[i + 1], eta)
        b = 1 - down / s[i]
        x = kernels.linear_combination([x, denoised, denoised_2, draw(s[i], s[i + 1])],
                                       [down / s[i], b * (1 - fac), b * fac, s_noise * up], out=x)
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback = None,
                        noise: NoiseSource = None, noise_sampler: NoiseSampler = None, eta: float = 1.0,
                        s_noise: float = 1.0, solver_type: str = "midpoint") -> torch.Tensor:
    """DPM-Solver++(2M) SDE (k-diffusion sample_dpmpp_2m_sde; 'heun' or 'midpoint' second-order term).
    With eta = 0 it is DPM++ 2M; with eta = 1 it is diffusers' 'sde-dpmsolver++' of order 2."""
    if solver_type not in ("heun", "midpoint"):
        raise ValueError(f"solver_type={solver_type!r}; valid: heun, midpoint")
    s = sigmas.tolist()
    draw = _interval_noise(noise_sampler, noise, x)
    x = x.clone()
    old, h_last = None, None
    for i in range(len(s) - 1):
        denoised = denoiser(x, _sigma_batch(x, s[i])).contiguous()
        _report(callback, i, len(s) - 1, x, s[i], denoised)
        if s[i + 1] == 0:
            x = denoised.clone()
            h = None
        else:
            h = math.log(s[i]) - math.log(s[i + 1])
            eta_h = eta * h
            a = s[i + 1] / s[i] * math.exp(-eta_h)
            b = -math.expm1(-h - eta_h)
            inputs, weights = [x, denoised], [a, b]
            if old is not None:
                r = h_last / h
                c = 0.5 * b / r if solver_type == "midpoint" else (b / (-h - eta_h) + 1) / r
                inputs.append(old)
                weights = [a, b + c, -c]
            if eta:
                inputs.append(draw(s[i], s[i + 1]))
                weights.append(s[i + 1] * math.sqrt(-math.expm1(-2 * eta_h)) * s_noise)
            x = kernels.linear_combination(inputs, weights, out=x)
        old, h_last = denoised, h
    return x


@torch.no_grad()
def sample_dpmpp_3m_sde(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback = None,
                        noise: NoiseSource = None, noise_sampler: NoiseSampler = None, eta: float = 1.0,
                        s_noise: float = 1.0) -> torch.Tensor:
    """DPM-Solver++(3M) SDE (k-diffusion sample_dpmpp_3m_sde): third-order multistep with the
    phi_2 / phi_3 functions of the exponential integrator, h scaled by (1 + eta)."""
    s = sigmas.tolist()
    draw = _interval_noise(noise_sampler, noise, x)
    x = x.clone()
    d_1 = d_2 = None
    h_1 = h_2 = None
    for i in range(len(s) - 1):
        denoised = denoiser(x, _sigma_batch(x, s[i])).contiguous()
        _report(callback, i, len(s) - 1, x, s[i], denoised)
        h = None
        if s[i + 1] == 0:
            x = denoised.clone()
        else:
            h = math.log(s[i]) - math.log(s[i + 1])
            h_eta = h * (eta + 1)
            inputs, weights = [x, denoised], [math.exp(-h_eta), -math.expm1(-h_eta)]
            phi_2 = math.expm1(-h_eta) / h_eta + 1
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                phi_3 = phi_2 / h_eta - 0.5
                # d1_0 = (D - D1)/r0, d1_1 = (D1 - D2)/r1; d1 = d1_0 + (d1_0 - d1_1) r0/(r0+r1);
                # d2 = (d1_0 - d1_1)/(r0+r1); x += phi_2 d1 - phi_3 d2, expanded in D, D1, D2.
                k = r0 / (r0 + r1)
                w_d1_0 = phi_2 * (1 + k) - phi_3 / (r0 + r1)
                w_d1_1 = -phi_2 * k + phi_3 / (r0 + r1)
                inputs += [d_1, d_2]
                weights = [weights[0], weights[1] + w_d1_0 / r0, -w_d1_0 / r0 + w_d1_1 / r1, -w_d1_1 / r1]
            elif h_1 is not None:
                r = h_1 / h
                inputs.append(d_1)
                weights = [weights[0], weights[1] + phi_2 / r, -phi_2 / r]
            if eta:
                inputs.append(draw(s[i], s[i + 1]))
                weights.append(s[i + 1] * math.sqrt(-math.expm1(-2 * h * eta)) * s_noise)
            x = kernels.linear_combination(inputs, weights, out=x)
        d_1, d_2 = denoised, d_1
        h_1, h_2 = h, h_1
    return x
