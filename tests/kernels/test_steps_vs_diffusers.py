"""The fused step kernels driven as whole sampler loops, against diffusers' own schedulers.

diffusers' EulerDiscrete, EulerAncestralDiscrete and DPMSolverMultistep (dpmsolver++, order 2,
midpoint) implement the same samplers as k-diffusion's sample_euler, sample_euler_ancestral and
sample_dpmpp_2m, written independently (DPM-Solver in the VP parameterisation). A fixed smooth
"model" stands in for the UNet. Tolerance: 1e-4 relative after the full loop in fp32.
"""
import os

import numpy as np
import pytest
import torch

# diffusers is a core dependency; only the GPU machine's image lacks it unless its wheel is carried.
# CI installs every core dependency, so there a missing diffusers fails instead of skipping.
if os.environ.get("CI"):
    import diffusers
else:
    diffusers = pytest.importorskip("diffusers")
DPMSolverMultistepScheduler = diffusers.DPMSolverMultistepScheduler
EulerAncestralDiscreteScheduler = diffusers.EulerAncestralDiscreteScheduler
EulerDiscreteScheduler = diffusers.EulerDiscreteScheduler

from sdrt import kernels

SD_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def fake_eps(x_in: torch.Tensor, sigma: float, w: torch.Tensor) -> torch.Tensor:
    """A deterministic, non-linear epsilon prediction from the UNet's input (x scaled by c_in)."""
    return torch.tanh(x_in * w) * 0.8 + 0.1 * np.sin(sigma)


def k_denoised(x: torch.Tensor, sigma: float, w: torch.Tensor) -> torch.Tensor:
    x_in = x / (sigma**2 + 1) ** 0.5  # k-diffusion's c_in for eps models
    return x - sigma * fake_eps(x_in, sigma, w)


def close(a, b, tol=1e-4):
    err = ((a - b).abs() / (1 + b.abs())).max().item()
    assert err < tol, f"relative error {err:.3g}"


@pytest.mark.parametrize("steps", [8, 25])
def test_euler_loop_matches_diffusers_euler_discrete(rng, steps):
    sched = EulerDiscreteScheduler(**SD_SCHEDULE)
    sched.set_timesteps(steps)
    sigmas = sched.sigmas.double().tolist()
    w = torch.from_numpy(rng.uniform(0.2, 1.2, (1, 4, 1, 1)).astype(np.float32))
    x0 = torch.from_numpy(rng.standard_normal((2, 4, 16, 16)).astype(np.float32)) * sigmas[0]

    x_d = x0.clone()
    for i, t in enumerate(sched.timesteps):
        eps = fake_eps(sched.scale_model_input(x_d, t), sigmas[i], w)
        x_d = sched.step(eps, t, x_d).prev_sample

    x_k = x0.clone()
    for i in range(steps):
        x_k = kernels.euler_step(x_k, k_denoised(x_k, sigmas[i], w), sigmas[i], sigmas[i + 1])
    close(x_k, x_d)


@pytest.mark.parametrize("steps", [8, 25])
def test_euler_ancestral_loop_matches_diffusers(rng, steps):
    sched = EulerAncestralDiscreteScheduler(**SD_SCHEDULE)
    sched.set_timesteps(steps)
    sigmas = sched.sigmas.double().tolist()
    w = torch.from_numpy(rng.uniform(0.2, 1.2, (1, 4, 1, 1)).astype(np.float32))
    x0 = torch.from_numpy(rng.standard_normal((1, 4, 16, 16)).astype(np.float32)) * sigmas[0]
    seed = int(rng.integers(0, 2**31))

    gen = torch.Generator().manual_seed(seed)
    x_d = x0.clone()
    for i, t in enumerate(sched.timesteps):
        eps = fake_eps(sched.scale_model_input(x_d, t), sigmas[i], w)
        x_d = sched.step(eps, t, x_d, generator=gen).prev_sample

    gen = torch.Generator().manual_seed(seed)  # the same noise draws, in the same order
    x_k = x0.clone()
    for i in range(steps):
        noise = torch.randn(x_k.shape, generator=gen, dtype=torch.float32)
        x_k = kernels.euler_ancestral_step(x_k, k_denoised(x_k, sigmas[i], w), noise, sigmas[i], sigmas[i + 1])
    close(x_k, x_d)


@pytest.mark.parametrize("steps,karras", [(10, False), (20, True)])
def test_dpmpp_2m_loop_matches_diffusers_dpm_solver_multistep(rng, steps, karras):
    sched = DPMSolverMultistepScheduler(**SD_SCHEDULE, algorithm_type="dpmsolver++", solver_order=2,
                                        solver_type="midpoint", use_karras_sigmas=karras, final_sigmas_type="zero")
    sched.set_timesteps(steps)
    sigmas = sched.sigmas.double().tolist()
    assert sigmas[-1] == 0.0
    w = torch.from_numpy(rng.uniform(0.2, 1.2, (1, 4, 1, 1)).astype(np.float32))
    x_ve = torch.from_numpy(rng.standard_normal((2, 4, 16, 16)).astype(np.float32)) * sigmas[0]

    # diffusers works on the VP sample x / sqrt(sigma^2 + 1); the UNet input is the same.
    x_d = x_ve / (sigmas[0] ** 2 + 1) ** 0.5
    for i, t in enumerate(sched.timesteps):
        x_d = sched.step(fake_eps(x_d, sigmas[i], w), t, x_d).prev_sample

    x_k, old, = x_ve.clone(), None
    for i in range(steps):
        den = k_denoised(x_k, sigmas[i], w)
        x_k = kernels.dpmpp_2m_step(x_k, den, sigmas[i], sigmas[i + 1], old_denoised=old,
                                    sigma_prev=sigmas[i - 1] if i else None)
        old = den
    close(x_k, x_d)
