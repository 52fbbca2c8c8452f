"""UniPC against diffusers' UniPCMultistepScheduler (same fake model and tolerance as
test_samplers_vs_diffusers.py), for both B(h) variants and orders 1-3."""
import math

import numpy as np
import pytest
import torch
from diffusers import UniPCMultistepScheduler

from sdrt.sampling.denoiser import DiscreteEpsDenoiser
from sdrt.sampling.schedules import discrete_sigmas, scaled_linear_betas
from sdrt.sampling.unipc import sample_unipc
from test_samplers_vs_diffusers import SD, assert_close, fake_unet, run_diffusers, unique_sigmas


@pytest.mark.parametrize("order,variant", [(1, "bh2"), (2, "bh2"), (2, "bh1"), (3, "bh1"), (3, "bh2")])
@pytest.mark.parametrize("steps", [5, 12, 20])
def test_unipc_matches_diffusers(rng, order, variant, steps):
    # diffusers' bh1 turns the final step to sigma 0 into NaN (B(h) = -inf times a zero residual), so
    # bh1 is compared on its final_sigmas_type="sigma_min" schedule, which ends at the model's sigma_min.
    final = "sigma_min" if variant == "bh1" else "zero"
    sched = UniPCMultistepScheduler(**SD, solver_order=order, solver_type=variant, final_sigmas_type=final)
    sched.set_timesteps(steps)
    w = torch.from_numpy(rng.uniform(0.2, 1.2, (1, 4, 1, 1)).astype(np.float32))
    unet = fake_unet(w)
    x0 = torch.from_numpy(rng.standard_normal((2, 4, 8, 8)).astype(np.float32))
    want = run_diffusers(sched, x0 * sched.init_noise_sigma, unet)
    sigmas = unique_sigmas(sched)
    den = DiscreteEpsDenoiser(unet, discrete_sigmas(scaled_linear_betas()))
    start = x0 * math.sqrt(1 + float(sigmas[0]) ** 2)  # diffusers starts from unit noise in VP space
    got = sample_unipc(lambda x, s: den(x, s, None), start, sigmas, order=order, variant=variant)
    assert_close(got / math.sqrt(1 + float(sigmas[-1]) ** 2), want)  # back to VP space (a no-op at sigma 0)


def test_unipc_rejects_bad_options():
    x = torch.ones(1, 4, 2, 2)
    with pytest.raises(ValueError, match="variant"):
        sample_unipc(lambda x, s: x, x, torch.tensor([1.0, 0.0]), variant="bh3")
    with pytest.raises(ValueError, match="order"):
        sample_unipc(lambda x, s: x, x, torch.tensor([1.0, 0.0]), order=4)


def test_a1111_unipc_timesteps_are_the_model_sigmas_at_integer_times():
    from sdrt.sampling import get_unipc_timestep_sigmas

    den = DiscreteEpsDenoiser(lambda *a: None, discrete_sigmas(scaled_linear_betas()))
    s = get_unipc_timestep_sigmas(9, den)  # times 999, 888, ..., 0: all integers
    assert torch.allclose(s, den.sigmas.double()[list(range(999, -1, -111))], rtol=1e-6)
    s20 = get_unipc_timestep_sigmas(20, den)
    assert len(s20) == 21 and torch.all(s20[:-1] > s20[1:])
    assert float(s20[-1]) == pytest.approx(float(den.sigmas[0]), rel=1e-6)


def test_a1111_unipc_img2img_grid():
    """A1111 UniPC img2img: t_enc steps evenly in time from t_start = T[t_enc - 1] (its T[-1] / 1000 +
    1 / 1000 in continuous time) to 0, the init noised to T[t_enc] of the DDIM-style timesteps T."""
    from sdrt.sampling import SAMPLERS, img2img_sigmas

    den = DiscreteEpsDenoiser(lambda *a: None, discrete_sigmas(scaled_linear_betas()))
    info = SAMPLERS["UniPC"]
    run, sigma_noise = img2img_sigmas(info, info.timesteps(20, den), 20, 0.5, den)
    assert len(run) == 11  # t_enc = 10 steps
    want_t = [451 - 45.1 * k for k in range(11)]
    assert float(run[0]) == pytest.approx(float(den.sigmas[451]), rel=1e-6)
    assert float(run[-1]) == pytest.approx(float(den.sigmas[0]), rel=1e-6)
    assert float(run[5]) == pytest.approx(float(den.t_to_sigma(torch.tensor(want_t[5]))), rel=1e-4)
    assert sigma_noise == pytest.approx(float(den.sigmas[501]), rel=1e-6)
    # strength so low that no step is left: the noised init at T[0], no model call
    run0, s0 = img2img_sigmas(info, info.timesteps(20, den), 20, 0.01, den)
    assert len(run0) == 1 and s0 == pytest.approx(float(den.sigmas[1]), rel=1e-6)
