"""v-prediction models (SD 2.x 768-v; Salimans & Ho 2022): the denoiser's scalings (k-diffusion's
DiscreteVDDPMDenoiser) against diffusers' schedulers configured with prediction_type
"v_prediction", on the fake model and tolerance of test_samplers_vs_diffusers.py."""
import math

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler

from sdrt.sampling import samplers
from sdrt.sampling.denoiser import DiscreteEpsDenoiser
from sdrt.sampling.schedules import discrete_sigmas, scaled_linear_betas

from test_samplers_vs_diffusers import SD, assert_close, fake_unet, run_diffusers, unique_sigmas


@pytest.mark.parametrize("name,sched,vp", [
    ("Euler", EulerDiscreteScheduler(**SD, prediction_type="v_prediction", use_karras_sigmas=True,
                                     timestep_spacing="linspace"), False),
    ("DPM++ 2M", DPMSolverMultistepScheduler(**SD, prediction_type="v_prediction", algorithm_type="dpmsolver++",
                                             solver_order=2, final_sigmas_type="zero"), True),
])
def test_v_prediction_matches_diffusers(rng, name, sched, vp):
    sched.set_timesteps(12)
    w = torch.from_numpy(rng.uniform(0.2, 1.2, (1, 4, 1, 1)).astype(np.float32))
    unet = fake_unet(w)
    noise = torch.from_numpy(rng.standard_normal((2, 4, 8, 8)).astype(np.float32))
    want = run_diffusers(sched, noise * sched.init_noise_sigma, unet)
    sigmas = unique_sigmas(sched)
    den = DiscreteEpsDenoiser(unet, discrete_sigmas(scaled_linear_betas()), "v_prediction")
    start = noise * (math.sqrt(1 + float(sigmas[0]) ** 2) if vp else float(sched.init_noise_sigma))
    got = samplers[name](lambda x, s: den(x, s, None), start, sigmas)
    assert_close(got, want)


def test_unknown_prediction_type_is_refused():
    with pytest.raises(ValueError, match="prediction_type='sample'"):
        DiscreteEpsDenoiser(lambda *a: None, discrete_sigmas(scaled_linear_betas()), "sample")
