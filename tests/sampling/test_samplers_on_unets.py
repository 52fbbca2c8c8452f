"""The issue's parity bar on real UNets: from the same weights and the same initial noise, sdrt's
Euler, Euler a, LMS, Heun, DPM2, DPM++ 2M (Karras), DDIM and UniPC end within 1e-4 (max absolute
latent difference, fp32) of diffusers' corresponding schedulers driven on the same UNet — a tiny
randomly initialised UNet2DConditionModel and the shipped toy UNet.

The diffusers side is the plain scheduler loop (scale_model_input, UNet, step); ancestral noise
comes from a generator both sides draw from in the same order. k-diffusion samplers and diffusers'
sigma-space schedulers start from the same x; DPM-Solver, DDIM and UniPC work on the VP sample
x / sqrt(1 + sigma^2), so sdrt starts from noise * sqrt(1 + sigma_0^2) and its result is brought
back the same way (a no-op at sigma 0).
"""
import inspect
import math

import pytest
import torch
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, HeunDiscreteScheduler, KDPM2DiscreteScheduler, LMSDiscreteScheduler,
                       UNet2DConditionModel, UniPCMultistepScheduler)

import sdrt
from sdrt.sampling import samplers
from sdrt.sampling.denoiser import DiscreteEpsDenoiser
from sdrt.sampling.schedules import discrete_sigmas, scaled_linear_betas

from test_samplers_vs_diffusers import SD, unique_sigmas

STEPS = 10
CASES = {  # sdrt sampler -> (diffusers scheduler, works on the VP sample)
    "Euler": (lambda: EulerDiscreteScheduler(**SD, use_karras_sigmas=True, timestep_spacing="linspace"), False),
    "Euler a": (lambda: EulerAncestralDiscreteScheduler(**SD), False),
    "LMS": (lambda: LMSDiscreteScheduler(**SD, use_karras_sigmas=True), False),
    "Heun": (lambda: HeunDiscreteScheduler(**SD), False),
    "DPM2": (lambda: KDPM2DiscreteScheduler(**SD), False),
    "DPM++ 2M": (lambda: DPMSolverMultistepScheduler(**SD, algorithm_type="dpmsolver++", solver_order=2,
                                                      use_karras_sigmas=True, final_sigmas_type="zero"), True),
    "DDIM": (lambda: DDIMScheduler(**SD, timestep_spacing="leading", steps_offset=1, set_alpha_to_one=False,
                                   clip_sample=False), True),
    # A1111's UniPC: order 3, bh1 (diffusers' bh1 needs a final sigma_min, see test_unipc.py)
    "UniPC": (lambda: UniPCMultistepScheduler(**SD, solver_order=3, solver_type="bh1",
                                              final_sigmas_type="sigma_min"), True),
}


def tiny_random_unet():
    torch.manual_seed(1234)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=4, norm_num_groups=8)
    return unet.eval(), torch.randn(2, 77, 32)


def toy_unet():
    pipe = sdrt.load("toy")
    ids = pipe.tokenizer(["a red circle in the top left", "a blue square"], padding="max_length", max_length=77,
                         return_tensors="pt").input_ids
    return pipe.unet, pipe.backend.encode_text(ids)


@pytest.fixture(scope="module", params=["tiny random UNet", "toy UNet"])
def unet(request):
    module, context = tiny_random_unet() if request.param == "tiny random UNet" else toy_unet()

    @torch.no_grad()
    def eps(x_in, t, context_=None):
        return module(x_in, t, encoder_hidden_states=context).sample
    return eps


def model_timesteps(name, sched):
    """The timesteps the UNet is given. diffusers' DPM-Solver rounds its Karras timesteps to integers
    (k-diffusion and A1111 do not; ~1e-3 apart by design), so there the UNet gets the unrounded
    timesteps of the same Karras sigmas, from diffusers' EulerDiscreteScheduler."""
    if name != "DPM++ 2M":
        return sched.timesteps
    euler = EulerDiscreteScheduler(**SD, use_karras_sigmas=True, timestep_spacing="linspace")
    euler.set_timesteps(len(sched.timesteps))
    torch.testing.assert_close(euler.sigmas[:-1], sched.sigmas[:-1].to(euler.sigmas))
    return euler.timesteps


def diffusers_sigmas(name, sched, den):
    if name == "DDIM":  # sigma space: its timesteps, then t = 0 (final_alpha_cumprod with set_alpha_to_one off)
        return den.sigmas.double()[torch.cat([sched.timesteps, torch.tensor([0])])]
    return unique_sigmas(sched)


@pytest.mark.parametrize("name", list(CASES))
def test_sampler_matches_diffusers_on_a_real_unet(unet, name):
    make, vp = CASES[name]
    sched = make()
    sched.set_timesteps(STEPS)
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(7))
    seed = 99
    gen = torch.Generator().manual_seed(seed)
    kwargs = {"generator": gen} if "generator" in inspect.signature(sched.step).parameters else {}
    want = noise * sched.init_noise_sigma
    for t, t_model in zip(sched.timesteps, model_timesteps(name, sched)):
        want = sched.step(unet(sched.scale_model_input(want, t), t_model), t, want, **kwargs).prev_sample

    den = DiscreteEpsDenoiser(unet, discrete_sigmas(scaled_linear_betas()))
    sigmas = diffusers_sigmas(name, sched, den)
    start = noise * (math.sqrt(1 + float(sigmas[0]) ** 2) if vp else float(sched.init_noise_sigma))
    gen = torch.Generator().manual_seed(seed)
    got = samplers[name](lambda x, s: den(x, s, None), start, sigmas,
                         noise=lambda: torch.randn(noise.shape, generator=gen))
    if vp:
        got = got / math.sqrt(1 + float(sigmas[-1]) ** 2)
    err = (got - want).abs().max().item()
    assert err < 1e-4, f"{name}: max abs latent difference {err:.3g} (latents up to {want.abs().max():.2f})"
