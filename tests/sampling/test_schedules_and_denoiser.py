"""Schedules and the sigma <-> timestep mapping against diffusers' EulerDiscreteScheduler."""
import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler

from sdrt.sampling import resolve_sampler, sigmas_for
from sdrt.sampling.denoiser import DiscreteEpsDenoiser
from sdrt.sampling.schedules import discrete_sigmas, get_sigmas_karras, scaled_linear_betas

SD = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


@pytest.fixture(scope="module")
def denoiser():
    return DiscreteEpsDenoiser(lambda x, t, c: x, discrete_sigmas(scaled_linear_betas()))


def test_model_sigmas_match_diffusers():
    sched = EulerDiscreteScheduler(**SD)
    want = ((1 - sched.alphas_cumprod) / sched.alphas_cumprod) ** 0.5
    # diffusers accumulates alphas_cumprod in fp32, sdrt in fp64: they agree to fp32 precision
    np.testing.assert_allclose(discrete_sigmas(scaled_linear_betas()).numpy(), want.numpy(), rtol=5e-5)


@pytest.mark.parametrize("steps", [5, 20, 37])
def test_karras_sigmas_match_diffusers(denoiser, steps):
    sched = EulerDiscreteScheduler(**SD, use_karras_sigmas=True, timestep_spacing="linspace")
    sched.set_timesteps(steps)
    got = get_sigmas_karras(steps, denoiser.sigma_min, denoiser.sigma_max)
    np.testing.assert_allclose(got.numpy(), sched.sigmas.double().numpy(), rtol=1e-5, atol=1e-6)


def test_sigma_to_t_matches_diffusers_log_interpolation(denoiser, rng):
    sched = EulerDiscreteScheduler(**SD)
    log_sigmas = np.log(denoiser.sigmas.double().numpy())
    sigmas = np.exp(rng.uniform(np.log(denoiser.sigma_min), np.log(denoiser.sigma_max), 50))
    want = np.array([sched._sigma_to_t(np.array(s), log_sigmas) for s in sigmas]).ravel()
    got = denoiser.sigma_to_t(torch.tensor(sigmas, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(got, want, atol=2e-3)


def test_t_to_sigma_inverts_sigma_to_t(denoiser, rng):
    t = torch.tensor(rng.uniform(0, 999, 100), dtype=torch.float32)
    np.testing.assert_allclose(denoiser.sigma_to_t(denoiser.t_to_sigma(t)).numpy(), t.numpy(), atol=2e-2)


def test_uniform_schedule_is_k_diffusion_get_sigmas(denoiser):
    s = sigmas_for("Uniform", 10, denoiser)
    assert s.shape == (11,) and s[-1] == 0
    assert s[0] == pytest.approx(denoiser.sigma_max, rel=1e-5)
    assert s[-2] == pytest.approx(denoiser.sigma_min, rel=1e-5)
    assert torch.all(s[:-1] > s[1:])


def test_sampler_names_and_legacy_names():
    assert resolve_sampler("Euler a")[1] == "Uniform"
    assert resolve_sampler("DPM++ 2M")[1] == "Karras"
    info, schedule = resolve_sampler("DPM++ 2M Karras")
    assert info.name == "DPM++ 2M" and schedule == "Karras"
    assert resolve_sampler("Euler", "Exponential")[1] == "Exponential"
    with pytest.raises(ValueError, match=r"sampler_name='Eulr' is unknown; valid: Euler, Euler a, LMS, Heun, DPM2, "
                                         r"DPM2 a, DPM\+\+ 2S a, DPM\+\+ 2M"):
        resolve_sampler("Eulr")
    with pytest.raises(ValueError, match=r"scheduler='Karas' is unknown"):
        resolve_sampler("Euler", "Karas")


@pytest.mark.parametrize("schedule", [s for s in __import__("sdrt.sampling", fromlist=["SCHEDULERS"]).SCHEDULERS
                                      if s != "Automatic"])
@pytest.mark.parametrize("steps", [3, 10, 25])
def test_every_schedule_is_decreasing_and_ends_at_zero(denoiser, schedule, steps):
    s = sigmas_for(schedule, steps, denoiser)
    if schedule == "KL Optimal":  # A1111's kl_optimal stops at sigma_min, with no zero appended
        assert s.shape == (steps + 1,) and abs(float(s[-1]) - denoiser.sigma_min) < 1e-6
        s = torch.cat([s, s.new_zeros(1)])
    assert s[-1] == 0
    assert torch.all(s[:-1] > s[1:]), s
    # Align Your Steps is a published table rounded to 3 decimals (0.029 vs the model's 0.02917)
    rel = 1e-2 if schedule == "Align Your Steps" else 1e-5
    assert s[0] <= denoiser.sigma_max * (1 + rel) and s[-2] >= denoiser.sigma_min * (1 - rel)


def test_ddim_and_simple_schedules_match_diffusers_spacings(denoiser):
    from diffusers import DDIMScheduler

    ddim = DDIMScheduler(**SD, steps_offset=1, timestep_spacing="leading")
    ddim.set_timesteps(10)
    want = ((1 - ddim.alphas_cumprod[ddim.timesteps]) / ddim.alphas_cumprod[ddim.timesteps]) ** 0.5
    np.testing.assert_allclose(sigmas_for("DDIM", 10, denoiser)[:-1].numpy(), want.numpy(), rtol=5e-5)
    trailing = EulerDiscreteScheduler(**SD, timestep_spacing="trailing")
    trailing.set_timesteps(10)
    np.testing.assert_allclose(sigmas_for("Simple", 10, denoiser).numpy(), trailing.sigmas.numpy(), rtol=5e-5)


def test_schedule_identities(denoiser):
    from sdrt.sampling.schedules import AYS_SIGMAS, get_sigmas_beta, get_sigmas_polyexponential

    assert torch.allclose(sigmas_for("Polyexponential", 12, denoiser), sigmas_for("Exponential", 12, denoiser))
    assert not torch.allclose(get_sigmas_polyexponential(12, 0.03, 14.6, rho=2.0), sigmas_for("Exponential", 12, denoiser))
    assert torch.allclose(sigmas_for("Normal", 12, denoiser), sigmas_for("Uniform", 12, denoiser), rtol=1e-4)
    ays = sigmas_for("Align Your Steps", 11, denoiser)
    assert ays[:-1].tolist() == pytest.approx(list(AYS_SIGMAS["sd1"]))
    ays10 = sigmas_for("Align Your Steps", 10, denoiser)
    assert ays10[0] == pytest.approx(14.615) and ays10[-2] == pytest.approx(0.029)
    beta = get_sigmas_beta(11, 0.03, 14.6)  # Beta(0.6, 0.6) is symmetric: the middle quantile is the midpoint
    assert beta[5].item() == pytest.approx((0.03 + 14.6) / 2, rel=1e-6)


def test_kl_optimal_is_even_in_arctan_sigma(denoiser):
    s = sigmas_for("KL Optimal", 10, denoiser).double()
    steps = torch.diff(torch.atan(s))
    assert torch.allclose(steps, steps[0].expand_as(steps), atol=1e-9)
    assert abs(float(s[0]) - denoiser.sigma_max) < 1e-5
