"""DPM++ SDE / 2M SDE / 3M SDE, the Brownian-tree noise and DDIM.

Oracles: diffusers' DPMSolverMultistepScheduler ('sde-dpmsolver++' order 2 is k-diffusion's 2M SDE
at eta 1 with the midpoint term; 'dpmsolver++' order 3 is 3M SDE at eta 0) and DDIMScheduler, all
fed the same noise through `variance_noise`; and identities between samplers written apart (2M SDE
at eta 0 is DPM++ 2M; DPM++ SDE at eta 0 is DPM++ 2S a at eta 0). Fake model and tolerance as in
test_samplers_vs_diffusers.py.
"""
import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from sdrt.sampling import get_sigmas_karras, get_timestep_sigmas, samplers
from sdrt.sampling.brownian import BrownianTreeNoise
from sdrt.sampling.denoiser import DiscreteEpsDenoiser
from sdrt.sampling.schedules import discrete_sigmas, scaled_linear_betas

from test_samplers_vs_diffusers import SD, assert_close, fake_unet, unique_sigmas


def _setup(rng, shape=(2, 4, 8, 8)):
    w = torch.from_numpy(rng.uniform(0.2, 1.2, (1, 4, 1, 1)).astype(np.float32))
    unet = fake_unet(w)
    den = DiscreteEpsDenoiser(unet, discrete_sigmas(scaled_linear_betas()))
    x = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
    return unet, (lambda x, s: den(x, s, None)), den, x


def _noises(rng, n, shape):
    return [torch.from_numpy(rng.standard_normal(shape).astype(np.float32)) for _ in range(n)]


def _run_diffusers(sched, x, unet, noises):
    for i, t in enumerate(sched.timesteps):
        eps = unet(sched.scale_model_input(x, t), t)
        x = sched.step(eps, t, x, variance_noise=noises[i]).prev_sample
    return x


@pytest.mark.parametrize("name,solver_type", [("DPM++ 2M SDE", "midpoint"), ("DPM++ 2M SDE Heun", "heun")])
@pytest.mark.parametrize("steps", [8, 16])
def test_dpmpp_2m_sde_matches_diffusers_sde_dpmsolver(rng, steps, name, solver_type):
    # (Default spacing: with Karras sigmas diffusers rounds the model's timesteps to integers and
    # k-diffusion does not, so that combination differs by design.)
    sched = DPMSolverMultistepScheduler(**SD, algorithm_type="sde-dpmsolver++", solver_order=2, solver_type=solver_type)
    sched.set_timesteps(steps)
    unet, model, den, x0 = _setup(rng)
    noises = _noises(rng, steps, x0.shape)
    want = _run_diffusers(sched, x0 * sched.init_noise_sigma, unet, noises)
    sigmas = unique_sigmas(sched)
    draws = iter(noises)
    start = x0 * math.sqrt(1 + float(sigmas[0]) ** 2)  # diffusers starts from unit noise in VP space
    got = samplers[name](model, start, sigmas, noise=lambda: next(draws), eta=1.0)
    assert_close(got, want)


def test_dpmpp_3m_sde_at_eta_0_matches_diffusers_third_order(rng):
    # k-diffusion's 3M warms up with the 'heun' form of the second-order term (phi_2 = expm1(-h)/h + 1).
    sched = DPMSolverMultistepScheduler(**SD, algorithm_type="dpmsolver++", solver_order=3, solver_type="heun")
    sched.set_timesteps(16)  # >= 15: diffusers lowers the order only at the final step, as k-diffusion does
    unet, model, den, x0 = _setup(rng)
    want = _run_diffusers(sched, x0 * sched.init_noise_sigma, unet, [None] * 16)
    sigmas = unique_sigmas(sched)
    got = samplers["DPM++ 3M SDE"](model, x0 * math.sqrt(1 + float(sigmas[0]) ** 2), sigmas, eta=0.0)
    assert_close(got, want)


def test_sde_samplers_at_eta_0_are_their_ode_counterparts(rng):
    unet, model, den, x0 = _setup(rng)
    sigmas = get_sigmas_karras(12, den.sigma_min, den.sigma_max)
    x = x0 * float(sigmas[0])
    assert_close(samplers["DPM++ 2M SDE"](model, x, sigmas, eta=0.0), samplers["DPM++ 2M"](model, x, sigmas))
    assert_close(samplers["DPM++ SDE"](model, x, sigmas, eta=0.0),
                 samplers["DPM++ 2S a"](model, x, sigmas, eta=0.0))


@pytest.mark.parametrize("name", ["DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 3M SDE"])
def test_sde_samplers_use_the_noise_and_are_deterministic_per_seed(rng, name):
    unet, model, den, x0 = _setup(rng)
    sigmas = get_sigmas_karras(10, den.sigma_min, den.sigma_max)
    x = x0 * float(sigmas[0])
    runs = [samplers[name](model, x, sigmas, noise_sampler=BrownianTreeNoise(x, sigmas, seeds))
            for seeds in ([5, 6], [5, 6], [7, 8])]
    assert torch.equal(runs[0], runs[1])
    assert (runs[0] - runs[2]).abs().max() > 1e-3
    assert torch.isfinite(runs[0]).all()


def test_brownian_noise_is_per_image_additive_and_unit_variance():
    x = torch.zeros(2, 4, 16, 16)
    sigmas = torch.tensor([14.6, 5.0, 1.0, 0.03, 0.0], dtype=torch.float64)
    both = BrownianTreeNoise(x, sigmas, [11, 12])
    second = BrownianTreeNoise(x[:1], sigmas, [12])
    assert torch.equal(both(5.0, 1.0)[1], second(5.0, 1.0)[0])  # an image's noise ignores its batch
    a, b, c = 5.0, 2.0, 0.5  # W(a->c) = W(a->b) + W(b->c), each returned as increment / sqrt(|dt|)
    whole = both(a, c) * math.sqrt(a - c)
    parts = both(a, b) * math.sqrt(a - b) + both(b, c) * math.sqrt(b - c)
    assert torch.allclose(whole, parts, atol=1e-4)
    samples = torch.cat([both(s, n).flatten() for s, n in [(14.6, 5.0), (5.0, 1.0), (1.0, 0.03)]])
    assert abs(float(samples.std()) - 1.0) < 0.05 and abs(float(samples.mean())) < 0.05
    with pytest.raises(ValueError, match="seeds"):
        BrownianTreeNoise(x, sigmas, [1])


@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_ddim_matches_diffusers(rng, eta):
    sched = DDIMScheduler(**SD, timestep_spacing="leading", steps_offset=1, set_alpha_to_one=False,
                          clip_sample=False)
    sched.set_timesteps(10)
    unet, model, den, x0 = _setup(rng)
    noises = _noises(rng, 10, x0.shape)

    want = x0.clone()  # diffusers works in VP space and starts from pure noise
    for i, t in enumerate(sched.timesteps):
        eps = unet(sched.scale_model_input(want, t), t)
        want = sched.step(eps, t, want, eta=eta, variance_noise=noises[i]).prev_sample
    # The same steps in sigma space: sigmas at the timesteps, then at t = 0 (final_alpha_cumprod).
    idx = torch.cat([sched.timesteps, torch.tensor([0])])
    sigmas = den.sigmas.double()[idx]
    draws = iter(noises)
    got = samplers["DDIM"](model, x0 * math.sqrt(1 + float(sigmas[0]) ** 2), sigmas, noise=lambda: next(draws), eta=eta)
    assert_close(got / math.sqrt(1 + float(sigmas[-1]) ** 2), want)


def test_a1111_ddim_timesteps():
    den = DiscreteEpsDenoiser(lambda *a: None, discrete_sigmas(scaled_linear_betas()))
    sig = get_timestep_sigmas(20, den)
    want_t = list(range(951, 0, -50))  # range(0, 1000, 50) + 1, from the largest down
    assert torch.equal(sig, den.sigmas.double()[want_t])
    assert len(get_timestep_sigmas(30, den)) == 31  # A1111's range(0, 1000, 1000 // 30) has 31 entries


@pytest.mark.parametrize("strength,eta", [(0.5, 0.0), (0.75, 0.7), (0.3, 0.0)])
def test_ddim_img2img_is_a1111s_timestep_form(rng, strength, eta):
    """A1111's DDIM img2img (CompVisSampler.sample_img2img): of the ascending timesteps T, the init
    latent is noised in VP space to T[t_enc], and the DDIM loop then calls the model at T[t_enc - 1]
    ... T[1], each step going to the timestep below, ending at T[0] = 1. Here that loop is diffusers'
    DDIMScheduler (its 'leading' timesteps with steps_offset 1 are A1111's)."""
    from sdrt.pipelines.start_point import StartPoint
    from sdrt.sampling import SAMPLERS

    steps = 20
    sched = DDIMScheduler(**SD, timestep_spacing="leading", steps_offset=1, set_alpha_to_one=False,
                          clip_sample=False)
    sched.set_timesteps(steps)
    asc = sched.timesteps.flip(0)
    t_enc = int(strength * steps)
    unet, model, den, init = _setup(rng)
    noise = torch.from_numpy(rng.standard_normal(init.shape).astype(np.float32))
    noises = _noises(rng, steps, init.shape)

    a_enc = sched.alphas_cumprod[asc[t_enc]]
    want = init * a_enc.sqrt() + noise * (1 - a_enc).sqrt()
    sched.timesteps = asc[1:t_enc].flip(0)
    for i, t in enumerate(sched.timesteps):
        want = sched.step(unet(want, t), t, want, eta=eta, variance_noise=noises[i]).prev_sample

    info = SAMPLERS["DDIM"]
    sigmas = get_timestep_sigmas(steps, den)
    run, x, _ = StartPoint(init, strength).begin(info, sigmas, steps, noise, den)
    assert len(run) == t_enc  # t_enc - 1 model calls
    draws = iter(noises)
    got = samplers["DDIM"](model, x, run, noise=lambda: next(draws), eta=eta)
    assert_close(got / math.sqrt(1 + float(run[-1]) ** 2), want)
