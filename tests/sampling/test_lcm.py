"""LCM (A1111's LCMCompVisDenoiser + sample_lcm) against diffusers' LCMScheduler on the same fake
epsilon model, the same timesteps and the same noise draws.

A1111 spaces LCM's steps evenly over the 50 original timesteps and rounds each sigma to the
nearest one; with 8 steps (or 2, or 50) the even spacing lands exactly on original timesteps
(999, 859, ..., 19), which diffusers accepts as custom timesteps, so both sides run the same chain.
Tolerance |difference| / (1 + |diffusers|) < 1e-4 (fp32).
"""
import numpy as np
import pytest
import torch
from diffusers import LCMScheduler

from sdrt.sampling import SAMPLERS, LCMDenoiser, sample_lcm, sigmas_for
from sdrt.sampling.denoiser import DiscreteEpsDenoiser
from sdrt.sampling.schedules import discrete_sigmas, scaled_linear_betas

from test_samplers_vs_diffusers import SD, assert_close, fake_unet


def lcm_denoiser(unet) -> LCMDenoiser:
    return LCMDenoiser.wrapping(DiscreteEpsDenoiser(unet, discrete_sigmas(scaled_linear_betas())))


def test_lcm_timesteps_are_the_50_original_ones():
    den = lcm_denoiser(fake_unet(torch.ones(1)))
    base = discrete_sigmas(scaled_linear_betas()).float()
    assert len(den.sigmas) == 50
    torch.testing.assert_close(den.sigmas, base[19::20])
    # sigma -> the nearest original timestep, in training-step units
    assert den.sigma_to_t(base[[999, 980, 500, 19, 0]]).tolist() == [999, 979, 499, 19, 19]
    sig = den.get_sigmas(8)
    assert sig[-1] == 0 and len(sig) == 9
    assert den.sigma_to_t(sig[:-1].float()).tolist() == list(range(999, 18, -140))
    torch.testing.assert_close(sig[:-1].float(), base[list(range(999, 18, -140))], rtol=1e-5, atol=0)


def test_lcm_sampler_is_registered_with_its_own_denoiser():
    info = SAMPLERS["LCM"]
    base = DiscreteEpsDenoiser(fake_unet(torch.ones(1)), discrete_sigmas(scaled_linear_betas()))
    den = info.model_denoiser(base)
    assert isinstance(den, LCMDenoiser)
    # Automatic (Uniform) and Karras are computed on LCM's timesteps, as A1111 does
    assert float(sigmas_for("Uniform", 4, den)[0]) == pytest.approx(float(base.sigmas[999]), rel=1e-6)
    assert float(sigmas_for("Karras", 4, den)[-2]) == pytest.approx(float(base.sigmas[19]), rel=1e-6)


@pytest.mark.parametrize("steps", [2, 8])
def test_lcm_matches_diffusers_lcm_scheduler(rng, steps):
    w = torch.from_numpy(rng.uniform(0.2, 1.2, (1, 4, 1, 1)).astype(np.float32))
    unet = fake_unet(w)
    den = lcm_denoiser(unet)
    sigmas = den.get_sigmas(steps)
    timesteps = den.sigma_to_t(sigmas[:-1].float()).tolist()

    sched = LCMScheduler(**SD)
    sched.set_timesteps(timesteps=timesteps)
    assert sched.timesteps.tolist() == timesteps
    noise = torch.from_numpy(rng.standard_normal((2, 4, 8, 8)).astype(np.float32))
    seed = int(rng.integers(0, 2**31))
    x_vp, gen = noise.clone(), torch.Generator().manual_seed(seed)
    for t in sched.timesteps:
        out = sched.step(unet(x_vp, t), t, x_vp, generator=gen)
        x_vp = out.prev_sample
    want = out.denoised

    gen = torch.Generator().manual_seed(seed)
    draw = lambda: torch.randn(noise.shape, generator=gen)  # noqa: E731  same draws as diffusers' randn_tensor
    # diffusers starts from VP noise; in sigma space that is x = noise * sqrt(1 + sigma_0^2)
    x = noise * float((1 + sigmas[0] ** 2) ** 0.5)
    got = sample_lcm(lambda x, s: den(x, s, None), x, sigmas, noise=draw)
    assert_close(got, want)


def test_lcm_draws_one_noise_per_step_but_the_last(rng):
    den = lcm_denoiser(fake_unet(torch.ones(1)))
    calls = []

    def draw():
        calls.append(1)
        return torch.zeros(1, 4, 8, 8)
    sample_lcm(lambda x, s: den(x, s, None), torch.ones(1, 4, 8, 8), den.get_sigmas(4), noise=draw)
    assert len(calls) == 3
