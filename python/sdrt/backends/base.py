"""The backend contract: what the pipeline and the samplers may call on any backend, and the flags
that say which optional features a backend supports.

Features that need more than the four calls (run-time LoRA patches the torch modules, ControlNet
passes residuals into the UNet) ask the capability flags instead of testing for attributes, so a
backend that cannot do something is refused with a clear error rather than an AttributeError
halfway through a job.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, runtime_checkable

import torch


@dataclass(frozen=True)
class BackendCapabilities:
    # the backend holds torch modules (unet, text_encoder, vae) whose weights job-scoped patches
    # such as LoRA may change and restore
    patchable_weights: bool
    # unet_forward accepts any `extras`: keyword inputs of diffusers' UNet call (the exported
    # backends take only SDXL's added conditions and, exported with ControlNets, their residuals)
    extra_unet_inputs: bool
    # device types the backend runs on ("cpu", "cuda", "mps")
    devices: tuple[str, ...]


@runtime_checkable
class Backend(Protocol):
    """Inputs may live on any device; results come back as float32 on the device of the call's main
    input, so the sampler loop never needs to know where the model runs."""

    name: str
    capabilities: BackendCapabilities

    def unet_forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                     extras: Optional[dict] = None) -> torch.Tensor:
        """Noise (or v) prediction for latents `x` at `timestep` under text `context`."""

    def encode_text(self, ids: torch.Tensor, clip_skip: int = 1, embeddings=None) -> torch.Tensor:
        """Token ids -> hidden states; `embeddings[row]` lists textual-inversion slots."""

    def vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Unscaled VAE latents -> images in [-1, 1]."""

    def vae_encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> unscaled posterior-mean latents."""


def refuse_extras(backend_name: str, extras: Optional[dict]) -> None:
    """Backends whose UNet is a fixed graph cannot take extra inputs; say so instead of dropping
    them (a ControlNet silently ignored would give plausible but wrong images)."""
    if extras:
        raise ValueError(f"extras: the {backend_name} backend's UNet takes no extra inputs "
                         f"(got {', '.join(sorted(extras))}); use the torch backend for extra UNet inputs "
                         "(ControlNet residuals: export the model with --controlnet NAME)")
