"""sdrt's samplers, driven through the real denoiser wrapper (sigma -> timestep, c_in scaling),
against diffusers' schedulers on the same fake epsilon model and the same sigmas.

Fake model: eps = 0.8 * tanh(w * x_in) + 0.1 * sin(t / 100), so both the input scaling and the
timestep each side feeds the model are checked. The fake model does not denoise, so final values
reach ~10 in magnitude; tolerance: |difference| / (1 + |diffusers|) < 1e-4 (fp32).
"""
import numpy as np
import pytest
import torch
from diffusers import (EulerDiscreteScheduler, HeunDiscreteScheduler, KDPM2AncestralDiscreteScheduler,
                       KDPM2DiscreteScheduler, LMSDiscreteScheduler)

from sdrt.sampling import samplers
from sdrt.sampling.denoiser import DiscreteEpsDenoiser
from sdrt.sampling.schedules import discrete_sigmas, scaled_linear_betas

SD = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def fake_unet(w):
    def eps(x_in, t, context=None):
        t = torch.as_tensor(t, dtype=torch.float32).reshape(-1, 1, 1, 1)
        return 0.8 * torch.tanh(w * x_in) + 0.1 * torch.sin(t / 100.0)
    return eps


def unique_sigmas(sched) -> torch.Tensor:
    s = sched.sigmas.double()
    keep = torch.ones_like(s, dtype=torch.bool)
    keep[1:] = s[1:] != s[:-1]
    return s[keep]


def run_diffusers(sched, x, unet, noise_gen=None):
    for t in sched.timesteps:
        eps = unet(sched.scale_model_input(x, t), t)
        kwargs = {"generator": noise_gen} if noise_gen is not None else {}
        x = sched.step(eps, t, x, **kwargs).prev_sample
    return x


@pytest.mark.parametrize("name,cls,kwargs", [
    ("Euler", EulerDiscreteScheduler, dict(use_karras_sigmas=True, timestep_spacing="linspace")),
    ("Heun", HeunDiscreteScheduler, dict()),
    ("Heun", HeunDiscreteScheduler, dict(use_karras_sigmas=True)),
    ("DPM2", KDPM2DiscreteScheduler, dict()),
    ("LMS", LMSDiscreteScheduler, dict()),
    ("LMS", LMSDiscreteScheduler, dict(use_karras_sigmas=True)),
    # (KDPM2 with use_karras_sigmas rounds the main timesteps to integers, which k-diffusion and
    # A1111 do not: ~2e-4 apart by design, so that combination is not an oracle.)
])
@pytest.mark.parametrize("steps", [6, 15])
def test_deterministic_samplers_match_diffusers(rng, name, cls, kwargs, steps):
    sched = cls(**SD, **kwargs)
    sched.set_timesteps(steps)
    w = torch.from_numpy(rng.uniform(0.2, 1.2, (1, 4, 1, 1)).astype(np.float32))
    unet = fake_unet(w)
    noise = torch.from_numpy(rng.standard_normal((2, 4, 8, 8)).astype(np.float32))
    sigmas = unique_sigmas(sched)
    want = run_diffusers(sched, noise * sched.init_noise_sigma, unet)
    den = DiscreteEpsDenoiser(unet, discrete_sigmas(scaled_linear_betas()))
    got = samplers[name](lambda x, s: den(x, s, None), noise * float(sigmas[0]), sigmas)
    assert_close(got, want)


def assert_close(got, want):
    err = ((got - want).abs() / (1 + want.abs())).max().item()
    assert err < 1e-4, f"relative error {err:.3g}"


def test_dpm2_ancestral_matches_diffusers(rng):
    sched = KDPM2AncestralDiscreteScheduler(**SD)
    sched.set_timesteps(10)
    w = torch.from_numpy(rng.uniform(0.2, 1.2, (1, 4, 1, 1)).astype(np.float32))
    unet = fake_unet(w)
    x0 = torch.from_numpy(rng.standard_normal((1, 4, 8, 8)).astype(np.float32))
    seed = int(rng.integers(0, 2**31))
    want = run_diffusers(sched, x0 * sched.init_noise_sigma, unet, torch.Generator().manual_seed(seed))
    sigmas = unique_sigmas(sched)
    den = DiscreteEpsDenoiser(unet, discrete_sigmas(scaled_linear_betas()))
    gen = torch.Generator().manual_seed(seed)
    got = samplers["DPM2 a"](lambda x, s: den(x, s, None), x0 * float(sigmas[0]), sigmas,
                             noise=lambda: torch.randn(x0.shape, generator=gen))
    assert_close(got, want)
