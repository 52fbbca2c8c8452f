"""Samplers (stateless, k-diffusion style), schedules and the denoiser, with A1111's names.

``SAMPLERS`` maps every A1111 sampler label to its SamplerInfo and ``SCHEDULERS`` lists the
schedule types; ``get_sigmas_*`` are the schedules and ``sample_*`` the samplers."""
from __future__ import annotations

from functools import partial
from typing import Callable, Optional

import torch

from .samplers import (sample_ddim, sample_dpm_2, sample_dpm_2_ancestral, sample_dpmpp_2m, sample_dpmpp_2s_ancestral,
                       sample_euler, sample_euler_ancestral, sample_heun, sample_lms)
from .sde_samplers import sample_dpmpp_2m_sde, sample_dpmpp_3m_sde, sample_dpmpp_sde
from .schedules import (get_sigmas_align_your_steps, get_sigmas_beta, get_sigmas_ddim, get_sigmas_exponential,
                        get_sigmas_karras, get_sigmas_kl_optimal, get_sigmas_normal, get_sigmas_polyexponential,
                        get_sigmas_sgm_uniform, get_sigmas_simple, get_timestep_sigmas, get_unipc_timestep_sigmas,
                        ddim_img2img_sigmas, unipc_img2img_sigmas)
from .lcm import LCMDenoiser, sample_lcm
from .unipc import sample_unipc
from .sampler_info import SAMPLER_LOOPS, SamplerInfo
from .batching import BATCH_POLICIES, FRAMES_AS_BATCH, PER_IMAGE, WHOLE_BATCH, BatchPolicy


CHURN = ("s_churn", "s_tmin", "s_tmax", "s_noise")


SAMPLERS: dict[str, SamplerInfo] = {
    info.name: info for info in (
        SamplerInfo("Euler", sample_euler, "Uniform", CHURN),
        SamplerInfo("Euler a", sample_euler_ancestral, "Uniform", ("eta",)),
        SamplerInfo("LMS", sample_lms, "Uniform"),
        SamplerInfo("Heun", sample_heun, "Uniform", CHURN),
        SamplerInfo("DPM2", sample_dpm_2, "Karras", CHURN, discard_next_to_last_sigma=True),
        SamplerInfo("DPM2 a", sample_dpm_2_ancestral, "Karras", ("eta",), discard_next_to_last_sigma=True),
        SamplerInfo("DPM++ 2S a", sample_dpmpp_2s_ancestral, "Karras", ("eta",)),
        SamplerInfo("DPM++ 2M", sample_dpmpp_2m, "Karras"),
        SamplerInfo("DPM++ SDE", sample_dpmpp_sde, "Karras", ("eta",), brownian_noise=True),
        SamplerInfo("DPM++ 2M SDE", sample_dpmpp_2m_sde, "Exponential", ("eta",), brownian_noise=True),
        SamplerInfo("DPM++ 2M SDE Heun", partial(sample_dpmpp_2m_sde, solver_type="heun"), "Exponential", ("eta",),
                    brownian_noise=True),
        SamplerInfo("DPM++ 3M SDE", sample_dpmpp_3m_sde, "Exponential", ("eta",), discard_next_to_last_sigma=True,
                    brownian_noise=True),
        SamplerInfo("DDIM", sample_ddim, "Automatic", ("eta",), timesteps=get_timestep_sigmas,
                    img2img_timesteps=ddim_img2img_sigmas),
        SamplerInfo("UniPC", partial(sample_unipc, order=3, variant="bh1"), "Automatic",
                    timesteps=get_unipc_timestep_sigmas, img2img_timesteps=unipc_img2img_sigmas),
        SamplerInfo("LCM", sample_lcm, "Uniform", denoiser=LCMDenoiser.wrapping),
    )
}
samplers = {name: info.function for name, info in SAMPLERS.items()}
# A1111's schedule names; "Automatic" is the sampler's default (else the model's own, Uniform).
SCHEDULE_FUNCTIONS: dict[str, Callable] = {
    "Uniform": lambda n, d: d.get_sigmas(n),
    "Karras": lambda n, d: get_sigmas_karras(n, d.sigma_min, d.sigma_max),
    "Exponential": lambda n, d: get_sigmas_exponential(n, d.sigma_min, d.sigma_max),
    "Polyexponential": lambda n, d: get_sigmas_polyexponential(n, d.sigma_min, d.sigma_max),
    "SGM Uniform": get_sigmas_sgm_uniform,
    "Simple": get_sigmas_simple,
    "Normal": get_sigmas_normal,
    "DDIM": get_sigmas_ddim,
    "Beta": lambda n, d: get_sigmas_beta(n, d.sigma_min, d.sigma_max),
    "KL Optimal": lambda n, d: get_sigmas_kl_optimal(n, d.sigma_min, d.sigma_max),
    "Align Your Steps": lambda n, d: get_sigmas_align_your_steps(n, getattr(d, "family", "sd1")),
}
SCHEDULERS = ("Automatic", *SCHEDULE_FUNCTIONS)


def resolve_sampler(sampler_name: str, scheduler: str = "Automatic") -> tuple[SamplerInfo, str]:
    """(sampler, concrete schedule) from A1111 names; legacy 'DPM++ 2M Karras' splits into both.
    The schedule label to report is `schedule_label` of the same arguments."""
    name = sampler_name
    for sched in SCHEDULERS[1:]:
        if name.endswith(" " + sched) and name[: -len(sched) - 1] in SAMPLERS:
            name, scheduler = name[: -len(sched) - 1], sched
            break
    if name not in SAMPLERS:
        raise ValueError(f"sampler_name={sampler_name!r} is unknown; valid: {', '.join(SAMPLERS)}")
    if scheduler not in SCHEDULERS:
        raise ValueError(f"scheduler={scheduler!r} is unknown; valid: {', '.join(SCHEDULERS)}")
    info = SAMPLERS[name]
    return info, info.default_scheduler if scheduler == "Automatic" else scheduler


def schedule_label(sampler_name: str, scheduler: str = "Automatic") -> str:
    """What A1111 writes as "Schedule type": the schedule named in a legacy sampler name, else the
    scheduler as given ("Automatic" included)."""
    for sched in SCHEDULERS[1:]:
        if sampler_name.endswith(" " + sched) and sampler_name[: -len(sched) - 1] in SAMPLERS:
            return sched
    return scheduler


def sigmas_for(schedule: str, steps: int, denoiser, *, discard_next_to_last_sigma: bool = False,
               timesteps: Optional[Callable] = None) -> torch.Tensor:
    """The `steps + 1` sigmas of a concrete schedule for this model. Samplers that take two model
    calls per step (DPM2) compute one more and drop the next-to-last, as A1111 does. Timestep
    samplers (DDIM) take A1111's timesteps whatever the schedule."""
    if steps < 1:
        raise ValueError(f"steps={steps}; must be >= 1")
    if timesteps is not None:
        return timesteps(steps + 1 if discard_next_to_last_sigma else steps, denoiser)
    if discard_next_to_last_sigma:
        sigmas = sigmas_for(schedule, steps + 1, denoiser)
        return torch.cat([sigmas[:-2], sigmas[-1:]])
    if schedule not in SCHEDULE_FUNCTIONS:
        raise ValueError(f"schedule {schedule!r} has no sigma function")
    return SCHEDULE_FUNCTIONS[schedule](steps, denoiser)


def img2img_sigmas(info: SamplerInfo, sigmas: torch.Tensor, steps: int, strength: float,
                   denoiser, t_enc: int | None = None) -> tuple[torch.Tensor, float]:
    """(sigmas to run, sigma the init latent is noised to) for img2img at denoising `strength`:
    A1111 runs t_enc = int(min(strength, 0.999) * steps) steps (or the `t_enc` given: its
    img2img_fix_steps form, used by the hires pass). k-diffusion samplers take the last t_enc + 1
    sigmas of the schedule and noise to the first of them; timestep samplers (DDIM, UniPC) have
    their own form (noise one step above where they start)."""
    if t_enc is None:
        t_enc = int(min(strength, 0.999) * steps)
    if info.img2img_timesteps is not None:
        return info.img2img_timesteps(steps, t_enc, denoiser)
    run = sigmas[steps - t_enc - 1:]
    return run, float(run[0])


__all__ = [
    # the tables: A1111 sampler name -> SamplerInfo, schedule names -> sigma functions
    "SAMPLERS", "SCHEDULERS", "SCHEDULE_FUNCTIONS", "SAMPLER_LOOPS", "CHURN", "SamplerInfo", "samplers",
    "resolve_sampler", "schedule_label", "sigmas_for", "img2img_sigmas",
    # samplers (k-diffusion style functions)
    "sample_ddim", "sample_dpm_2", "sample_dpm_2_ancestral", "sample_dpmpp_2m", "sample_dpmpp_2m_sde",
    "sample_dpmpp_2s_ancestral", "sample_dpmpp_3m_sde", "sample_dpmpp_sde", "sample_euler", "sample_euler_ancestral",
    "sample_heun", "sample_lcm", "sample_lms", "sample_unipc", "LCMDenoiser",
    # schedules
    "get_sigmas_align_your_steps", "get_sigmas_beta", "get_sigmas_ddim", "get_sigmas_exponential",
    "get_sigmas_karras", "get_sigmas_kl_optimal", "get_sigmas_normal", "get_sigmas_polyexponential",
    "get_sigmas_sgm_uniform", "get_sigmas_simple", "get_timestep_sigmas", "get_unipc_timestep_sigmas",
    # batching policies
    "BatchPolicy", "BATCH_POLICIES", "PER_IMAGE", "WHOLE_BATCH", "FRAMES_AS_BATCH",
]
