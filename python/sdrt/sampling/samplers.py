"""Samplers: stateless functions in the k-diffusion style, stepping with sdrt's fused kernels.

``sample_x(denoiser, x, sigmas, *, callback=None, noise=None, ...) -> x`` where ``denoiser(x, sigma)``
returns the denoised prediction and ``noise()`` returns fresh noise shaped like ``x`` (per-image
generators in the pipeline, so a seed means the same picture on any machine).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from .. import kernels

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Optional[Callable[[dict], None]]
NoiseSource = Optional[Callable[[], torch.Tensor]]


def _sigma_batch(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return torch.full((x.shape[0],), sigma, dtype=torch.float32, device=x.device)


def _report(callback: Callback, i: int, total: int, x: torch.Tensor, sigma: float, denoised: torch.Tensor) -> None:
    if callback is not None:
        callback({"i": i, "total": total, "x": x, "sigma": sigma, "denoised": denoised})


def _noise_source(noise: NoiseSource, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    if noise is None:
        return lambda: torch.randn_like(x)
    return lambda: noise().to(x).contiguous()


def _churn(x: torch.Tensor, sigma: float, steps: int, noise, s_churn: float, s_tmin: float, s_tmax: float,
           s_noise: float) -> tuple[torch.Tensor, float]:
    """Karras et al. 2022, Alg. 2 lines 5-7: raise sigma to sigma_hat = sigma * (1 + gamma) by adding
    noise. Returns (x, sigma_hat); nothing changes (and no noise is drawn) when gamma is 0."""
    gamma = min(s_churn / steps, 2**0.5 - 1) if s_tmin <= sigma <= s_tmax else 0.0
    if gamma <= 0:
        return x, sigma
    sigma_hat = sigma * (gamma + 1)
    x = kernels.linear_combination([x, noise()], [1.0, s_noise * (sigma_hat**2 - sigma**2) ** 0.5])
    return x, sigma_hat


@torch.no_grad()
def sample_euler(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback = None,
                 noise: NoiseSource = None, s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"),
                 s_noise: float = 1.0) -> torch.Tensor:
    """Euler (Karras et al. 2022, Alg. 2)."""
    s = sigmas.tolist()
    draw = _noise_source(noise, x)
    x = x.clone()  # the steps update x in place; the caller's tensor stays as it was
    for i in range(len(s) - 1):
        x, sigma_hat = _churn(x, s[i], len(s) - 1, draw, s_churn, s_tmin, s_tmax, s_noise)
        denoised = denoiser(x, _sigma_batch(x, sigma_hat))
        _report(callback, i, len(s) - 1, x, s[i], denoised)
        x = kernels.euler_step(x, denoised.contiguous(), sigma_hat, s[i + 1], out=x)
    return x


@torch.no_grad()
def sample_euler_ancestral(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback = None,
                           noise: NoiseSource = None, eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    """Euler ancestral (k-diffusion sample_euler_ancestral): Euler to sigma_down, renoise by sigma_up."""
    draw = _noise_source(noise, x)
    s = sigmas.tolist()
    x = x.clone()
    for i in range(len(s) - 1):
        denoised = denoiser(x, _sigma_batch(x, s[i]))
        _report(callback, i, len(s) - 1, x, s[i], denoised)
        if s[i + 1] > 0:
            x = kernels.euler_ancestral_step(x, denoised.contiguous(), draw(), s[i], s[i + 1],
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
        _report(callback, i, len(s) - 1, x, s[i], denoised)
        x = kernels.dpmpp_2m_step(x, denoised, s[i], s[i + 1], old_denoised=old,
                                  sigma_prev=s[i - 1] if old is not None else None, out=x)
        old = denoised
    return x


def _churned_two_stage(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, callback: Callback,
                       noise: NoiseSource, churn: tuple[float, float, float, float], second_stage) -> torch.Tensor:
    """The loop Heun and DPM2 share: churn, denoise, plain Euler on the last step to sigma 0,
    otherwise `second_stage(x, denoised, sigma_hat, sigma_next)`."""
    s = sigmas.tolist()
    draw = _noise_source(noise, x)
    x = x.clone()
    for i in range(len(s) - 1):
        x, sh = _churn(x, s[i], len(s) - 1, draw, *churn)
        denoised = denoiser(x, _sigma_batch(x, sh)).contiguous()
        _report(callback, i, len(s) - 1, x, s[i], denoised)
        if s[i + 1] == 0:
            x = kernels.euler_step(x, denoised, sh, 0.0, out=x)
        else:
            x = second_stage(x, denoised, sh, s[i + 1])
    return x


@torch.no_grad()
def sample_heun(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback = None,
                noise: NoiseSource = None, s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"),
                s_noise: float = 1.0) -> torch.Tensor:
    """Heun's method (Karras et al. 2022, Alg. 2): an Euler step, corrected by the slope at its end."""
    def corrector(x, denoised, sh, sn):
        x_2 = kernels.euler_step(x, denoised, sh, sn)
        denoised_2 = denoiser(x_2, _sigma_batch(x, sn)).contiguous()
        dt = sn - sh
        # x + dt/2 * ((x - denoised)/sh + (x_2 - denoised_2)/sn)
        return kernels.linear_combination([x, denoised, x_2, denoised_2],
                                          [1 + dt / (2 * sh), -dt / (2 * sh), dt / (2 * sn), -dt / (2 * sn)], out=x)

    return _churned_two_stage(denoiser, x, sigmas, callback, noise, (s_churn, s_tmin, s_tmax, s_noise), corrector)


def _log_midpoint(a: float, b: float) -> float:
    return math.exp(0.5 * (math.log(a) + math.log(b)))


@torch.no_grad()
def sample_dpm_2(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback = None,
                 noise: NoiseSource = None, s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"),
                 s_noise: float = 1.0) -> torch.Tensor:
    """DPM-Solver-2 (Lu et al. 2022) in k-diffusion's sample_dpm_2: the slope at the log-midpoint sigma."""
    def midpoint(x, denoised, sh, sn):
        mid = _log_midpoint(sh, sn)
        x_2 = kernels.euler_step(x, denoised, sh, mid)
        denoised_2 = denoiser(x_2, _sigma_batch(x, mid)).contiguous()
        dt = sn - sh
        return kernels.linear_combination([x, x_2, denoised_2], [1.0, dt / mid, -dt / mid], out=x)

    return _churned_two_stage(denoiser, x, sigmas, callback, noise, (s_churn, s_tmin, s_tmax, s_noise), midpoint)


@torch.no_grad()
def sample_dpm_2_ancestral(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback = None,
                           noise: NoiseSource = None, eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    """Ancestral DPM-Solver-2 (k-diffusion sample_dpm_2_ancestral)."""
    s = sigmas.tolist()
    draw = _noise_source(noise, x)
    x = x.clone()
    for i in range(len(s) - 1):
        denoised = denoiser(x, _sigma_batch(x, s[i])).contiguous()
        _report(callback, i, len(s) - 1, x, s[i], denoised)
        down, up = kernels.ancestral_step_sigmas(s[i], s[i + 1], eta)
        if down == 0:
            x = kernels.euler_step(x, denoised, s[i], down, out=x)
            continue
        mid = _log_midpoint(s[i], down)
        x_2 = kernels.euler_step(x, denoised, s[i], mid)
        denoised_2 = denoiser(x_2, _sigma_batch(x, mid)).contiguous()
        dt = down - s[i]
        x = kernels.linear_combination([x, x_2, denoised_2, draw()], [1.0, dt / mid, -dt / mid, s_noise * up], out=x)
    return x


@torch.no_grad()
def sample_dpmpp_2s_ancestral(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                              callback: Callback = None, noise: NoiseSource = None, eta: float = 1.0,
                              s_noise: float = 1.0) -> torch.Tensor:
    """Ancestral DPM-Solver++(2S) (Lu et al. 2022; k-diffusion sample_dpmpp_2s_ancestral), t = -log sigma."""
    s = sigmas.tolist()
    draw = _noise_source(noise, x)
    x = x.clone()
    for i in range(len(s) - 1):
        denoised = denoiser(x, _sigma_batch(x, s[i])).contiguous()
        _report(callback, i, len(s) - 1, x, s[i], denoised)
        down, up = kernels.ancestral_step_sigmas(s[i], s[i + 1], eta)
        if down == 0:
            x = kernels.euler_step(x, denoised, s[i], down, out=x)
        else:
            h = math.log(s[i]) - math.log(down)
            mid = _log_midpoint(s[i], down)  # sigma at t + h / 2
            x_2 = kernels.linear_combination([x, denoised], [mid / s[i], -math.expm1(-h / 2)])
            denoised_2 = denoiser(x_2, _sigma_batch(x, mid)).contiguous()
            x = kernels.linear_combination([x, denoised_2], [down / s[i], -math.expm1(-h)], out=x)
        if s[i + 1] > 0:
            x = kernels.linear_combination([x, draw()], [1.0, s_noise * up], out=x)
    return x


def _lms_coefficient(order: int, t: list[float], i: int, j: int) -> float:
    """Integral over [t_i, t_{i+1}] of the j-th Lagrange basis polynomial through t_i ... t_{i-order+1}
    (k-diffusion linear_multistep_coeff; the quadrature is scipy's, as in k-diffusion and diffusers)."""
    from scipy import integrate

    def basis(tau: float) -> float:
        prod = 1.0
        for k in range(order):
            if k != j:
                prod *= (tau - t[i - k]) / (t[i - j] - t[i - k])
        return prod

    return integrate.quad(basis, t[i], t[i + 1], epsrel=1e-4)[0]


@torch.no_grad()
def sample_lms(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback = None,
               noise: NoiseSource = None, order: int = 4) -> torch.Tensor:
    """Linear multistep (k-diffusion sample_lms): Adams-Bashforth in sigma over the last `order` slopes."""
    s = sigmas.tolist()
    x = x.clone()
    slopes: list[torch.Tensor] = []
    for i in range(len(s) - 1):
        denoised = denoiser(x, _sigma_batch(x, s[i])).contiguous()
        _report(callback, i, len(s) - 1, x, s[i], denoised)
        slopes.append(kernels.linear_combination([x, denoised], [1 / s[i], -1 / s[i]]))
        if len(slopes) > order:
            slopes.pop(0)
        cur = min(i + 1, order)
        coeffs = [_lms_coefficient(cur, s, i, j) for j in range(cur)]
        x = kernels.linear_combination([x, *reversed(slopes)], [1.0, *coeffs], out=x)
    return x


@torch.no_grad()
def sample_ddim(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback = None,
                noise: NoiseSource = None, eta: float = 0.0) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12) written in sigma space (x = x_vp / sqrt(alpha_bar)).

    There, a DDIM step from alpha_t to alpha_prev with sigma_t = eta * sqrt((1 - a_prev) / (1 - a_t))
    * sqrt(1 - a_t / a_prev) is exactly an Euler step to sigma_down plus sigma_up * noise with
    k-diffusion's ancestral split (sigma_up^2 = eta^2 sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2),
    so DDIM is the Euler-ancestral loop with eta defaulting to 0 (A1111's eta_ddim). Which sigmas
    it runs on (A1111's timesteps) and the VP-space start/end are the pipeline's business.
    """
    return sample_euler_ancestral(denoiser, x, sigmas, callback=callback, noise=noise, eta=eta)
