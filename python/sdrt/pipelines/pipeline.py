"""The Pipeline: prompt -> conditioning -> sampler loop over a backend -> VAE -> images + infotext."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
from PIL import Image

from .. import __version__, kernels
from ..prompt.conditioning import ConditioningOptions, conditioning_for_batch
from ..sampling import resolve_sampler, sigmas_for
from ..sampling.denoiser import CFGDenoiser, DiscreteEpsDenoiser
from .infotext import create_infotext
from .rng import ImageRNG, resolve_seed


@dataclass
class Result:
    images: list[Image.Image]
    seeds: list[int]
    infotexts: list[str]
    prompts: list[str] = field(default_factory=list)


@dataclass
class ModelInfo:
    name: str
    scaling_factor: float
    default_size: int
    latent_channels: int = 4
    hash: Optional[str] = None


class Pipeline:
    def __init__(self, backend, tokenizer, model_sigmas: torch.Tensor, info: ModelInfo):
        self.backend, self.tokenizer, self.info = backend, tokenizer, info
        self.denoiser = DiscreteEpsDenoiser(backend.unet_forward, model_sigmas)
        # Textual-inversion lookup (token ids, position) -> (name, vectors, tokens consumed) | None;
        # filled by the embeddings loader.
        self.find_embedding = None

    # The loaded modules, as in a diffusers pipeline (torch backend).
    @property
    def unet(self):
        return self.backend.unet

    @property
    def vae(self):
        return self.backend.vae

    @property
    def text_encoder(self):
        return self.backend.text_encoder

    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        vae_latents = kernels.unscale_latents(latents.contiguous(), self.info.scaling_factor)
        pixels = self.backend.vae_decode(vae_latents).contiguous().cpu()
        return [Image.fromarray(a) for a in kernels.to_rgb_uint8(pixels).numpy()]

    def txt2img(self, prompt: str | Sequence[str], negative_prompt: str | Sequence[str] = "", *, steps: int = 20,
                sampler_name: str = "Euler a", scheduler: str = "Automatic", cfg_scale: float = 7.0,
                width: int | None = None, height: int | None = None, seed: int = -1, batch_size: int = 1,
                n_iter: int = 1, clip_skip: int = 1, eta: float = 1.0, s_churn: float = 0.0, s_tmin: float = 0.0,
                s_tmax: float = float("inf"), s_noise: float = 1.0, subseed: int = -1, subseed_strength: float = 0.0,
                eta_noise_seed_delta: int = 0, callback: Callable[[dict], None] | None = None) -> Result:
        """Text to image. `width`/`height` default to the model's native size. Image i of the job
        uses seed + i (A1111)."""
        width = self.info.default_size if width is None else int(width)
        height = self.info.default_size if height is None else int(height)
        for name, value in (("width", width), ("height", height)):
            if value < 8 or value % 8:
                raise ValueError(f"{name}={value}; must be a positive multiple of 8")
        for name, value in (("steps", steps), ("batch_size", batch_size), ("n_iter", n_iter), ("clip_skip", clip_skip)):
            if int(value) < 1:
                raise ValueError(f"{name}={value}; must be >= 1")
        for name, value in (("cfg_scale", cfg_scale), ("eta", eta), ("s_churn", s_churn), ("s_noise", s_noise)):
            if not math.isfinite(float(value)):
                raise ValueError(f"{name}={value}; must be a finite number")
        info, schedule = resolve_sampler(sampler_name, scheduler)
        prompts = _per_image(prompt, batch_size, "prompt")
        negatives = _per_image(negative_prompt, batch_size, "negative_prompt")
        first_seed = resolve_seed(seed)
        if not 0.0 <= float(subseed_strength) <= 1.0:
            raise ValueError(f"subseed_strength={subseed_strength}; must be in [0, 1]")
        first_subseed = resolve_seed(subseed, "subseed") if subseed_strength else None
        sigmas = sigmas_for(schedule, int(steps), self.denoiser,
                            discard_next_to_last_sigma=info.discard_next_to_last_sigma)
        given = {"eta": eta, "s_churn": s_churn, "s_tmin": s_tmin, "s_tmax": s_tmax, "s_noise": s_noise}
        sampler_options = {k: float(given[k]) for k in info.options}
        shape = (self.info.latent_channels, height // 8, width // 8)

        opts = ConditioningOptions(clip_skip=clip_skip, find_embedding=self.find_embedding)
        batch_cond = conditioning_for_batch(prompts, negatives, int(steps), self.tokenizer,
                                            self.backend.encode_text, opts)
        images, seeds, infotexts, all_prompts = [], [], [], []
        for it in range(int(n_iter)):
            batch_seeds = [first_seed + it * batch_size + i for i in range(batch_size)]
            batch_subseeds = None if first_subseed is None else [
                first_subseed + it * batch_size + i for i in range(batch_size)]
            denoiser = CFGDenoiser(self.denoiser, batch_cond, cfg_scale)
            rng = ImageRNG(shape, batch_seeds, subseeds=batch_subseeds, subseed_strength=subseed_strength,
                           eta_noise_seed_delta=eta_noise_seed_delta)
            x = rng.first() * float(sigmas[0])
            latents = info.function(denoiser, x, sigmas, callback=callback, noise=rng.next, **sampler_options)
            images += self.decode(latents)
            for j, (p, n, s) in enumerate(zip(prompts, negatives, batch_seeds)):
                params = {"Steps": int(steps), "Sampler": info.name, "Schedule type": scheduler,
                          "CFG scale": _num(cfg_scale), "Seed": s, "Size": f"{width}x{height}",
                          "Model hash": self.info.hash, "Model": self.info.name,
                          "Variation seed": batch_subseeds[j] if batch_subseeds else None,
                          "Variation seed strength": _num(subseed_strength) if batch_subseeds else None,
                          "Clip skip": clip_skip if clip_skip > 1 else None,
                          "ENSD": int(eta_noise_seed_delta) if eta_noise_seed_delta else None,
                          "RNG": "CPU",  # A1111's default is GPU; CPU is what reproduces across machines
                          "Version": f"sdrt {__version__}"}
                infotexts.append(create_infotext(p, n, params))
            seeds += batch_seeds
            all_prompts += prompts
        return Result(images, seeds, infotexts, all_prompts)


def _num(v: float):
    return int(v) if float(v).is_integer() else float(v)


MAX_PROMPT_CHARS = 65536  # ~870 chunks of 75 tokens: far past any useful prompt, refused before any work


def _per_image(value: str | Sequence[str], batch_size: int, name: str) -> list[str]:
    values = [value] * batch_size if isinstance(value, str) else list(value)
    if len(values) != batch_size or not all(isinstance(v, str) for v in values):
        raise ValueError(f"{name}: expected a string or a list of {batch_size} strings (one per image)")
    for v in values:
        if len(v) > MAX_PROMPT_CHARS:
            raise ValueError(f"{name}: {len(v)} characters; at most {MAX_PROMPT_CHARS}")
    return values
