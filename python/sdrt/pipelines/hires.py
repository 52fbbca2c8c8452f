"""Hires fix (A1111 txt2img with enable_hr; processing.StableDiffusionProcessingTxt2Img): sample
at the first-pass size, upscale, and sample again from there.

Per batch: first pass -> upscale the latents (a latent mode: torch interpolate) or the decoded
pixels (an upscaler, then the VAE of the hires model) -> cut to hr_resize_x/y's aspect -> the
hires pass, an img2img of exactly hr_second_pass_steps (or steps) steps from a schedule made for
int(steps / denoising_strength) steps (A1111's fixed-steps img2img), its noise drawn for the same
seeds at the new size. The prompts of the hires pass are scheduled with A1111's hires form of
prompt editing. The infotext is the first pass's with the "Hires ..." entries.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch

from ..postprocess.upscalers import LATENT_DEFAULT, LATENT_UPSCALE_MODES, Upscalers
from ..sampling import resolve_sampler, schedule_label
from ..sampling.denoiser import Interrupted, Skipped
from .hooks import JobHooks
from .infotext import infotext_number
from .job import Job
from .job_infotext import batch_infotexts
from .params import GenerationParams, ParamError, mode_defaults
from .patches import applied
from .postprocess import run_post_processors
from .refiner import short_title
from .rng import resolve_seed
from .start_point import StartPoint

OPT_F = 8  # pixels per latent
MAX_SCHEDULE_STEPS = 1000  # int(steps / denoising_strength): the model's timesteps; a tiny strength would not end


@dataclass(frozen=True)
class HiresPlan:
    first: GenerationParams   # the first pass (seeds resolved)
    second: GenerationParams  # the hires pass: its size, sampler, prompts; steps = the schedule's length
    run_steps: int            # the steps the hires pass runs
    upscale_to: tuple[int, int]  # (width, height) the first pass is upscaled to, before the cut
    truncate: tuple[int, int]    # latent columns / rows cut (hr_resize_x and _y with another aspect)
    upscaler: str
    infotext: dict


def target_size(width: int, height: int, p: GenerationParams) -> tuple[tuple[int, int], tuple[int, int], dict]:
    """A1111 calculate_target_resolution: ((width, height) to upscale to, (columns, rows) of latents
    to cut, its infotext entry). hr_resize_x/y with another aspect: scale to cover, then cut."""
    if p.hr_resize_x == 0 and p.hr_resize_y == 0:
        return (int(width * p.hr_scale), int(height * p.hr_scale)), (0, 0), {"Hires upscale": infotext_number(p.hr_scale)}
    entry = {"Hires resize": f"{p.hr_resize_x}x{p.hr_resize_y}"}
    if p.hr_resize_y == 0:
        return (p.hr_resize_x, p.hr_resize_x * height // width), (0, 0), entry
    if p.hr_resize_x == 0:
        return (p.hr_resize_y * width // height, p.hr_resize_y), (0, 0), entry
    if width / height < p.hr_resize_x / p.hr_resize_y:
        to = (p.hr_resize_x, p.hr_resize_x * height // width)
    else:
        to = (p.hr_resize_y * width // height, p.hr_resize_y)
    return to, ((to[0] - p.hr_resize_x) // OPT_F, (to[1] - p.hr_resize_y) // OPT_F), entry


def plan_hires(p: GenerationParams, upscalers: Upscalers) -> HiresPlan:
    """`p` sized and validated, enable_hr on. The legacy firstphase_width/height set the first
    pass's size (A1111 __post_init__; a 0 keeps width / height)."""
    width, height = p.firstphase_width or p.width, p.firstphase_height or p.height
    upscaler = p.hr_upscaler or LATENT_DEFAULT
    if upscaler not in LATENT_UPSCALE_MODES:
        try:
            upscalers.find(upscaler)
        except ValueError as e:
            raise ParamError("hr_upscaler", f"hr_upscaler: {e}; or a latent mode: {', '.join(LATENT_UPSCALE_MODES)}") from None
    to, truncate, size_entry = target_size(width, height, p)
    final = ((to[0] // OPT_F - truncate[0]) * OPT_F, (to[1] // OPT_F - truncate[1]) * OPT_F)
    if min(final) < OPT_F:
        raise ParamError(size_field(p), f"{size_field(p)}: the hires size {final[0]}x{final[1]} is empty")
    run_steps = int(p.hr_second_pass_steps or p.steps)
    schedule_steps = int(run_steps / min(p.denoising_strength, 0.999))
    if schedule_steps > MAX_SCHEDULE_STEPS:
        raise ParamError("denoising_strength", f"denoising_strength={p.denoising_strength}: the hires pass's schedule "
                                               f"would have {schedule_steps} steps (at most {MAX_SCHEDULE_STEPS})")
    seeds = dict(seed=resolve_seed(p.seed), subseed=resolve_seed(p.subseed, "subseed") if p.subseed_strength else p.subseed)
    # enable_hr off; the refiner runs in the hires pass only (A1111's default hires_fix_refiner_pass)
    first = dataclasses.replace(p, width=width, height=height, **mode_defaults("txt2img"), **seeds, refiner_checkpoint=None)
    second = dataclasses.replace(
        first, width=final[0], height=final[1], steps=schedule_steps, sampler_name=p.hr_sampler_name or p.sampler_name,
        refiner_checkpoint=p.refiner_checkpoint,
        scheduler=p.hr_scheduler or schedule_label(p.sampler_name, p.scheduler),  # a legacy "... Karras" carries over
        prompt=p.hr_prompt or p.prompt, negative_prompt=p.hr_negative_prompt or p.negative_prompt)
    return HiresPlan(first, second, run_steps, to, truncate, upscaler, _infotext(p, first, second, size_entry))


def size_field(p: GenerationParams) -> str:
    """The field that set the hires size (for errors)."""
    return "hr_resize_x" if p.hr_resize_x or p.hr_resize_y else "hr_scale"


def _infotext(p: GenerationParams, first: GenerationParams, second: GenerationParams, size_entry: dict) -> dict:
    """The "Hires ..." entries in A1111's order (processing.init, then calculate_target_resolution;
    "Hires checkpoint" is added by generate_hires, the prompts per image by hires_prompt_entries).
    "Hires schedule type": the hires pass's concrete schedule where it differs from the first's
    (A1111 sd_samplers_kdiffusion.get_sigmas)."""
    entries = {"Hires checkpoint": None,
               "Hires sampler": p.hr_sampler_name if p.hr_sampler_name not in (None, p.sampler_name) else None,
               "Hires prompt": None, "Hires negative prompt": None}
    first_schedule = resolve_sampler(first.sampler_name, first.scheduler)[1]
    second_schedule = resolve_sampler(second.sampler_name, second.scheduler)[1]
    entries["Hires schedule type"] = second_schedule if second_schedule != first_schedule else None
    entries.update(size_entry)
    entries["Hires steps"] = p.hr_second_pass_steps or None
    entries["Hires upscaler"] = p.hr_upscaler
    return entries


def hires_prompt_entries(job: Job, second: Job) -> Callable[[int], dict]:
    """Per image of a batch: "Hires prompt" / "Hires negative prompt" where that image's hires
    prompt differs from its prompt (A1111 writes all_hr_prompts[index] then)."""
    def entries(j: int) -> dict:
        return {"Hires prompt": _differing(second.written_prompts[j], job.written_prompts[j]),
                "Hires negative prompt": _differing(second.negatives[j], job.negatives[j])}
    return entries


def _differing(hires: str, main: str):
    return None if hires == main else hires


def generate_hires(pipe, p: GenerationParams, hooks: JobHooks):
    """The hires fix on `pipe` (`p` sized and validated). The hires pass runs on
    `hooks.hires_pipeline` when given (hr_checkpoint_name), else on `pipe`."""
    if hooks.start_point is not None:
        raise ValueError("JobHooks.start_point with enable_hr: the hires fix sets where each pass starts")
    hr_pipe = _hires_pipeline(pipe, p, hooks)
    plan = plan_hires(p, pipe.upscalers)
    first, second = pipe.prepare(plan.first, hooks), hr_pipe.prepare(plan.second, hooks, control=False)
    second.control = first.control  # the extension: one preprocessor run, its map refitted to the hires size
    second.hires_of, second.size_ids = (plan.first.steps, plan.run_steps), plan.upscale_to
    if hr_pipe is pipe and second.lora_tags != first.lora_tags:
        raise ParamError("hr_prompt", "hr_prompt: its <lora:...> tags differ from the prompt's; on one model the "
                                      "hires pass keeps the prompt's LoRAs")
    patches = pipe.job_patches(first, hooks)
    hr_patches = [] if hr_pipe is pipe else hr_pipe.job_patches(second, hooks)
    with applied(patches, pipe.backend), applied(hr_patches, hr_pipe.backend):
        first.infotext.update(plan.infotext)  # A1111: before the networks' "Lora hashes"
        if hr_pipe is not pipe:
            first.infotext["Hires checkpoint"] = short_title(hr_pipe.info)
        for patch in patches + hr_patches:
            first.infotext.update(patch.infotext)
        passes = _Passes(pipe, first, pipe.condition(first), hr_pipe, second,
                         hr_pipe.condition(second))
        _carry_entries(second, first)
        return _run(passes, plan, hooks)


def _carry_entries(second: Job, first: Job) -> None:
    """The hires pass's infotext entries the first pass's job (whose infotext the images get) lacks."""
    first.infotext.update({k: v for k, v in second.infotext.items() if k not in first.infotext})


def _hires_pipeline(pipe, p: GenerationParams, hooks: JobHooks):
    if hooks.hires_pipeline is not None:
        return hooks.hires_pipeline
    if p.hr_checkpoint_name:  # loaded with this model's options the first time, and kept
        return pipe.companion(p.hr_checkpoint_name, "hr_checkpoint_name")
    return pipe


@dataclass
class _Passes:
    """The two passes of a hires job: each one's pipeline, job and conds."""
    pipe: object
    first: Job
    conds: list
    hr_pipe: object
    second: Job
    hr_conds: list


def _run(passes: _Passes, plan: HiresPlan, hooks: JobHooks):
    from .pipeline import Result

    pipe, first, second = passes.pipe, passes.first, passes.second
    result, start = Result([], [], [], []), pipe.noise_start(first)
    prompt_entries = hires_prompt_entries(first, second)
    for batch in first.batches():
        low, stop = pipe.sample(first, batch, start, passes.conds, _pass_hooks(hooks, 0))
        if stop is not None and not isinstance(stop, Skipped) or hooks.should_stop and hooks.should_stop():
            images, stop = pipe.decode(low, first.policy), stop or Interrupted()  # A1111: the first pass's result
        else:
            hr_start = hires_start(pipe, passes.hr_pipe, plan, second, low)
            if stop is None:  # a skipped first pass ends with its upscale, as A1111's does
                latents, stop = passes.hr_pipe.sample(second, batch, hr_start, passes.hr_conds, _pass_hooks(hooks, 1))
                _carry_entries(second, first)  # what the hires pass adds while sampling (the refiner's switch)
            else:
                latents = hr_start.latents
            images = passes.hr_pipe.decode(latents, second.policy)
        images = run_post_processors(list(hooks.post_processors), images, batch)
        result.add(images, batch, first.written_prompts,
                   batch_infotexts(first, batch, pipe.info, plan.first.denoising_strength, per_image=prompt_entries))
        if stop is not None and not isinstance(stop, Skipped):
            result.interrupted = True
            break
    return result


def _pass_hooks(hooks: JobHooks, index: int) -> JobHooks:
    """The hooks with the callback told which pass runs ("hires_pass": 0 first, 1 hires)."""
    if hooks.callback is None:
        return hooks
    callback = hooks.callback
    return dataclasses.replace(hooks, callback=lambda info: callback({**info, "hires_pass": index}))


def hires_start(pipe, hr_pipe, plan: HiresPlan, second: Job, low: torch.Tensor) -> StartPoint:
    """The hires pass's start: the first pass's latents upscaled (latent mode) or decoded,
    upscaled and encoded again by the hires model's VAE; cut to the target aspect."""
    (to_w, to_h), (cut_x, cut_y) = plan.upscale_to, plan.truncate
    if plan.upscaler in LATENT_UPSCALE_MODES:
        mode, antialias = LATENT_UPSCALE_MODES[plan.upscaler]
        latents = torch.nn.functional.interpolate(low, size=(to_h // OPT_F, to_w // OPT_F), mode=mode,
                                                  antialias=antialias)
    else:
        images = [pipe.upscalers.resize(im, to_w, to_h, plan.upscaler) for im in pipe.decode(low, second.policy)]
        latents = hr_pipe.encode(images)
    latents = latents[:, :, cut_y // 2:latents.shape[2] - (cut_y + 1) // 2, cut_x // 2:latents.shape[3] - (cut_x + 1) // 2]
    return StartPoint(latents=latents, strength=plan.second.denoising_strength, run_steps=plan.run_steps,
                      image_cond=hr_pipe.image_conditioning(latents.shape[0], second.params.width, second.params.height))

