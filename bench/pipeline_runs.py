"""What the full-size pipeline benchmarks share: random-weight SD1.5 modules, sdrt's pipeline on
them, and A1111's it/s (sampler steps per second, timed between step callbacks, so text encoding
and the VAE are left out) for sdrt's and diffusers' pipelines."""
from __future__ import annotations

import time

import torch

PROMPT = "a photograph of a lighthouse on a cliff at dawn, highly detailed"


def random_sd1(device: str, dtype: torch.dtype, tiny: bool, controlnets: int = 0) -> list:
    """(unet, text_encoder, vae, *controlnets) of SD1.5's architecture with random weights (the
    toy's architecture when tiny)."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from sdrt.models.architectures import ARCHITECTURES

    arch = ARCHITECTURES["toy" if tiny else "sd1"]
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**arch.unet)
        text_encoder = CLIPTextModel(CLIPTextConfig(**arch.text_encoders["text_encoder"]))
        vae = AutoencoderKL(**arch.vae)
        extra = [ControlNetModel.from_unet(unet) for _ in range(controlnets)]
    return [m.to(dtype).eval().requires_grad_(False) for m in (unet, text_encoder, vae, *extra)]


def sdrt_sd1_pipeline(mods, device: str, dtype: torch.dtype, tiny: bool, compile_mode: str = "off"):
    """sdrt's Pipeline on the torch backend over `mods` (unet, text_encoder, vae), whole batches
    per UNet call as diffusers runs them."""
    from sdrt.backends.torch_backend import TorchBackend
    from sdrt.models.architectures import ARCHITECTURES
    from sdrt.pipelines import ModelInfo, Pipeline
    from sdrt.prompt import get_tokenizer
    from sdrt.sampling.schedules import betas_from_config, discrete_sigmas

    unet, text_encoder, vae = mods[:3]
    arch = ARCHITECTURES["toy" if tiny else "sd1"]
    info = ModelInfo(name="random", scaling_factor=float(vae.config.scaling_factor),
                     default_size=arch.resolution, family=arch.family)
    backend = TorchBackend(unet, text_encoder, vae, device=device, dtype=dtype, compile_mode=compile_mode)
    return Pipeline(backend, get_tokenizer(), discrete_sigmas(betas_from_config(arch.scheduler)), info,
                    batch_invariant=False)


def euler_scheduler():
    """diffusers' Euler scheduler on SD's training schedule (the sdrt runs use "Euler")."""
    from diffusers import EulerDiscreteScheduler

    from sdrt.models.architectures import SCHEDULER

    return EulerDiscreteScheduler(**{k: v for k, v in SCHEDULER.items() if k not in ("clip_sample", "set_alpha_to_one")})


def its(stamps: list[float]) -> float:
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def sdrt_its(pipe, size: int, steps: int, sync, **job) -> float:
    """it/s of one sdrt txt2img job (Euler, CFG 7, seed 1); `job`: more txt2img arguments."""
    stamps: list[float] = []

    def callback(info):
        sync()
        stamps.append(time.perf_counter())
    pipe.txt2img(PROMPT, width=size, height=size, steps=steps, sampler_name="Euler", cfg_scale=7.0, seed=1,
                 callback=callback, **job)
    return its(stamps)


def diffusers_its(pipe, size: int, steps: int, sync, **job) -> float:
    """it/s of one diffusers pipeline call (CFG 7, latents out); `job`: more call arguments."""
    stamps: list[float] = []

    def callback(p, i, t, kwargs):
        sync()
        stamps.append(time.perf_counter())
        return kwargs
    pipe(PROMPT, width=size, height=size, num_inference_steps=steps, guidance_scale=7.0,
         callback_on_step_end=callback, output_type="latent", **job)
    return its(stamps)
