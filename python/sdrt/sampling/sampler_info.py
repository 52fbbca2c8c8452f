"""What the generation stages need to know about a sampler, kept with the sampler: its A1111 name,
function, default schedule and options, and the hooks where samplers differ (where the run starts
and ends, its noise, which loop runs it, what the infotext says about eta)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

SAMPLER_LOOPS = ("python", "cpp")


@dataclass(frozen=True)
class SamplerInfo:
    name: str                 # A1111's label
    function: Callable
    default_scheduler: str    # what "Automatic" means for it
    options: tuple = ()       # which of eta / s_churn / s_tmin / s_tmax / s_noise it takes (as A1111 passes them)
    discard_next_to_last_sigma: bool = False
    brownian_noise: bool = False  # A1111 gives the SDE samplers a per-image Brownian tree (sampling.brownian)
    # A1111's timestep samplers (DDIM, UniPC): their own sigmas `timesteps(steps, denoiser)` whatever the
    # schedule, and they start from pure noise and end in the model's VP space (x * sqrt(alpha_bar))
    timesteps: Optional[Callable] = None
    # and their img2img form `(steps, t_enc, denoiser) -> (sigmas to run, sigma the init is noised to)`
    img2img_timesteps: Optional[Callable] = None
    # Samplers that see the model through their own denoiser (LCM's 50 original timesteps):
    # `denoiser(base) -> denoiser`; their schedules are computed on it too, as in A1111
    denoiser: Optional[Callable] = None

    def model_denoiser(self, base):
        return base if self.denoiser is None else self.denoiser(base)

    def start_from_noise(self, noise: torch.Tensor, sigma_max: float) -> torch.Tensor:
        """x at the first sigma from unit noise. Timestep samplers start in VP space, where pure noise
        is x_vp = noise, seen as x = x_vp / sqrt(alpha_bar) = noise * sqrt(1 + sigma^2)."""
        if self.timesteps is not None:
            return noise * math.sqrt(1 + sigma_max**2)
        return noise * sigma_max

    def start_from_latents(self, latents: torch.Tensor, noise: torch.Tensor, run: torch.Tensor,
                           sigma_noise: float) -> torch.Tensor:
        """img2img (A1111 sample_img2img): the init latent noised to `sigma_noise`; timestep samplers
        noise in VP space and see it from their first run sigma."""
        x = latents + noise * sigma_noise
        if self.timesteps is not None:
            x = x * math.sqrt((1 + float(run[0]) ** 2) / (1 + sigma_noise**2))
        return x

    def finish(self, latents: torch.Tensor, run: torch.Tensor) -> torch.Tensor:
        """The latents to decode: A1111 decodes the timestep samplers' VP-space result as it is."""
        if self.timesteps is not None:
            return latents / math.sqrt(1 + float(run[-1]) ** 2)
        return latents

    def noise_sampler(self, x: torch.Tensor, sigmas: torch.Tensor, seeds: Sequence[int]):
        """A1111's per-image Brownian tree for the SDE samplers, else None (they draw from `noise`)."""
        if not self.brownian_noise:
            return None
        from .brownian import BrownianTreeNoise

        return BrownianTreeNoise(x, sigmas, seeds)

    def options_from(self, given: dict) -> dict:
        """The sampler keyword options among `given` (None: the sampler's own default; A1111: eta 1
        for ancestral and SDE samplers, eta_ddim 0 for DDIM)."""
        return {k: float(given[k]) for k in self.options if given.get(k) is not None}

    def runner(self, loop: str, options: dict) -> Callable:
        """The function to run: the C++ loop where asked for and it covers this sampler (it has no
        churn), else the Python reference."""
        if loop not in SAMPLER_LOOPS:
            raise ValueError(f"sampler_loop={loop!r}; valid: {', '.join(SAMPLER_LOOPS)}")
        if loop == "python" or options.get("s_churn"):
            return self.function
        from .native import NATIVE_METHODS, sample_native

        if self.name not in NATIVE_METHODS:
            return self.function

        def native(denoiser, x, sigmas, *, callback, noise, s_tmin=None, s_tmax=None, s_churn=None, **rest):
            return sample_native(self.name, denoiser, x, sigmas, callback=callback, noise=noise, **rest)
        return native

    def eta_infotext(self, eta: float | None) -> dict:
        """A1111 writes eta only when it differs from the sampler's default: "Eta DDIM" (default 0)
        for its timestep samplers, "Eta" (default 1) for the k-diffusion ones."""
        if eta is None or "eta" not in self.options:
            return {}
        field, default = ("Eta DDIM", 0.0) if self.timesteps is not None else ("Eta", 1.0)
        return {} if float(eta) == default else {field: float(eta)}
