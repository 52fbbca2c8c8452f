"""Where a sampler run starts: pure noise (txt2img), or init latents noised to the img2img start
(img2img, inpainting, a hires pass, the previous frame of a video)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..sampling import img2img_sigmas

FILLS = ("fill", "original", "latent noise", "latent nothing")  # A1111's inpainting_fill 0..3


@dataclass
class StartPoint:
    """latents: (B, C, h, w) init latents in diffusion space, None for pure noise. strength: the
    denoising strength the run starts at. keep: (B, C, h, w), 1 where the init latent is kept
    (inpainting); fill: how the masked latents start (FILLS). image_cond: an inpainting UNet's
    extra input channels (mask and masked-image latents)."""
    latents: Optional[torch.Tensor] = None
    strength: float = 1.0
    keep: Optional[torch.Tensor] = None
    fill: str = "original"
    image_cond: Optional[torch.Tensor] = None
    # A1111's img2img with fixed steps (the hires pass): run exactly this many steps of a schedule
    # made for int(run_steps / strength) steps, instead of int(strength * steps) of `steps`
    run_steps: Optional[int] = None

    def begin(self, sampler, sigmas: torch.Tensor, steps: int, noise: torch.Tensor,
              denoiser) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """(sigmas to run, x at their first, the init latents masked inpainting keeps or None).
        img2img follows A1111's sample_img2img: latent noise / latent nothing replace the masked
        latents first, then the init is noised at the schedule's img2img start
        (sampling.img2img_sigmas)."""
        if self.latents is None:
            return sigmas, sampler.start_from_noise(noise, float(sigmas[0])), None
        latents = self.latents
        if self.keep is not None and self.fill == "latent noise":
            latents = latents * self.keep + noise * (1 - self.keep)
        elif self.keep is not None and self.fill == "latent nothing":
            latents = latents * self.keep
        t_enc = None if self.run_steps is None else self.run_steps - 1
        run, sigma_noise = img2img_sigmas(sampler, sigmas, steps, self.strength, denoiser, t_enc)
        x = sampler.start_from_latents(latents, noise, run, sigma_noise)
        return run, x, latents if self.keep is not None else None
