"""The prepare stage: GenerationParams -> Job (sampler, sigmas, seeds, prompts, batching), and the
job's batches."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Optional

import torch

from ..prompt.extra_networks import LoraTag, lora_tags, parse_prompt
from ..sampling import SamplerInfo, resolve_sampler, schedule_label, sigmas_for
from ..sampling.batching import BatchPolicy
from .params import GenerationParams, per_image
from .rng import resolve_seed


@dataclass(frozen=True)
class Batch:
    """One iteration's images: image i of the job uses seed + i (A1111)."""
    iteration: int
    seeds: tuple[int, ...]
    subseeds: Optional[tuple[int, ...]] = None


@dataclass
class Job:
    params: GenerationParams      # sized and validated
    sampler: SamplerInfo
    schedule_label: str           # what A1111 writes as "Schedule type"
    denoiser: object              # the model as this sampler sees it (LCM: its own timesteps)
    sigmas: torch.Tensor
    sampler_options: dict
    prompts: list[str]            # without extra-network tags: what is encoded
    written_prompts: list[str]    # as given: what the infotext keeps (A1111 keeps the <lora:...> tags)
    negatives: list[str]
    lora_tags: list[LoraTag]      # the first prompt's (A1111 activates those)
    first_seed: int
    first_subseed: Optional[int]
    latent_shape: tuple[int, int, int]
    policy: BatchPolicy
    infotext: dict = field(default_factory=dict)  # extra infotext entries the stages add, in order
    # a hires pass: (first-pass steps, hires steps) for prompt editing's hires form, and the size
    # A1111 conditions SDXL on (hr_upscale_to, before the aspect cut); None: a plain job
    hires_of: Optional[tuple[int, int]] = None
    size_ids: Optional[tuple[int, int]] = None
    control: list = field(default_factory=list)  # the ControlNet units that run (sdrt.control.job)

    def batches(self) -> Iterator[Batch]:
        n = self.params.batch_size
        for it in range(self.params.n_iter):
            subseeds = None if self.first_subseed is None else tuple(
                self.first_subseed + it * n + i for i in range(n))
            yield Batch(it, tuple(self.first_seed + it * n + i for i in range(n)), subseeds)


def prepare(p: GenerationParams, base_denoiser, latent_channels: int, policy: BatchPolicy) -> Job:
    """`p` sized and validated: resolve the sampler and schedule, the sigmas, seeds and prompts."""
    sampler, schedule = resolve_sampler(p.sampler_name, p.scheduler)
    written = per_image(p.prompt, p.batch_size, "prompt")
    prompts, tags = _strip_extra_networks(written)
    denoiser = sampler.model_denoiser(base_denoiser)
    steps = int(p.steps)
    sigmas = sigmas_for(schedule, steps, denoiser, discard_next_to_last_sigma=sampler.discard_next_to_last_sigma,
                        timesteps=sampler.timesteps)
    given = {"eta": p.eta, "s_churn": p.s_churn, "s_tmin": p.s_tmin, "s_tmax": p.s_tmax, "s_noise": p.s_noise}
    return Job(
        params=p, sampler=sampler, schedule_label=schedule_label(p.sampler_name, p.scheduler), denoiser=denoiser,
        sigmas=sigmas, sampler_options=sampler.options_from(given), prompts=prompts, written_prompts=written,
        negatives=per_image(p.negative_prompt, p.batch_size, "negative_prompt"), lora_tags=tags,
        first_seed=resolve_seed(p.seed),
        first_subseed=resolve_seed(p.subseed, "subseed") if p.subseed_strength else None,
        latent_shape=(latent_channels, p.height // 8, p.width // 8), policy=policy)


def _strip_extra_networks(prompts: list[str]) -> tuple[list[str], list[LoraTag]]:
    """The prompts without their extra-network tags, and the LoRA tags of the first one."""
    stripped, first = [], None
    for prompt in prompts:
        text, found = parse_prompt(prompt)
        stripped.append(text)
        if first is None:
            first = lora_tags(found.get("lora", []))
    return stripped, first or []
