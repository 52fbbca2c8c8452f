"""sdrt.load: a model name or folder -> a Pipeline on a backend."""
from __future__ import annotations

import contextlib
import json
import os
from importlib.resources import files
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

BACKENDS = ("torch",)


def toy_model_path() -> str:
    """The folder of the shipped toy model (diffusers layout)."""
    return str(files("sdrt.toy") / "weights")


def _resolve(model: str) -> str:
    path = toy_model_path() if model == "toy" else os.path.expanduser(str(model))
    if not os.path.exists(path):
        raise FileNotFoundError(f"model {model!r}: no such file or folder ({path})")
    if os.path.isfile(path):
        raise ValueError(f"model {model!r}: single-file checkpoints are not supported yet; "
                         "pass a diffusers folder or 'toy'")
    if not os.path.isfile(os.path.join(path, "model_index.json")):
        raise ValueError(f"model {model!r}: {path} is not a diffusers folder (no model_index.json)")
    return path


@contextlib.contextmanager
def _quiet_hf_loading():
    """diffusers/transformers log advice (install accelerate, progress bars) on every load; sdrt
    loads small local files where that advice does not apply."""
    import diffusers
    import transformers

    d_level, t_level = diffusers.utils.logging.get_verbosity(), transformers.utils.logging.get_verbosity()
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        diffusers.utils.logging.set_verbosity(d_level)
        transformers.utils.logging.set_verbosity(t_level)
        transformers.utils.logging.enable_progress_bar()


def load_components(folder: str, dtype: "torch.dtype", vae: str | None = None):
    """(unet, text_encoder, vae) of a diffusers folder, read from local files only; `vae` overrides
    the folder's VAE with another AutoencoderKL folder."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    vae_path = vae if vae is not None else os.path.join(folder, "vae")
    if not os.path.isfile(os.path.join(vae_path, "config.json")):
        raise ValueError(f"vae={vae_path!r}: expected a diffusers AutoencoderKL folder with config.json")
    common = dict(torch_dtype=dtype, local_files_only=True)
    with _quiet_hf_loading():
        return (UNet2DConditionModel.from_pretrained(os.path.join(folder, "unet"), **common),
                CLIPTextModel.from_pretrained(os.path.join(folder, "text_encoder"), **common),
                AutoencoderKL.from_pretrained(vae_path, **common))


def load(model: str = "toy", *, backend: str = "torch", device: str = "cpu", dtype: torch.dtype | None = None,
         vae: str | None = None, batch_invariant: bool = True):
    """Load a model (``"toy"`` or a diffusers folder) and return a :class:`sdrt.pipelines.Pipeline`.

    batch_invariant (default True): each image of a batch runs through the UNet and VAE on its own,
    so a batch with seeds s..s+3 is bit-identical to four single runs; False batches them into one
    call for throughput (results then differ from single runs by float rounding)."""
    import torch

    from .backends.torch_backend import TorchBackend
    from .pipelines import ModelInfo, Pipeline
    from .prompt import get_tokenizer
    from .sampling.schedules import betas_from_config, discrete_sigmas

    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not available; valid: {', '.join(BACKENDS)}")
    path = _resolve(model)
    # The small config first: an unsupported model is refused before any weights are read.
    with open(os.path.join(path, "scheduler", "scheduler_config.json"), encoding="utf-8") as f:
        scheduler_config = json.load(f)
    if scheduler_config.get("prediction_type", "epsilon") != "epsilon":
        raise ValueError(f"model {model!r}: prediction_type={scheduler_config['prediction_type']!r} is not supported yet")
    model_sigmas = discrete_sigmas(betas_from_config(scheduler_config))
    dtype = dtype or (torch.float16 if str(device).startswith("cuda") else torch.float32)
    unet, text_encoder, vae_model = load_components(path, dtype, vae)
    info = ModelInfo(name="toy" if model == "toy" else os.path.basename(os.path.normpath(path)),
                     scaling_factor=float(vae_model.config.scaling_factor),
                     default_size=int(unet.config.sample_size) * 8,
                     latent_channels=int(vae_model.config.latent_channels),
                     unet_in_channels=int(unet.config.in_channels))
    extra = info.unet_in_channels - info.latent_channels
    if extra not in (0, 5):  # 5: an inpainting UNet (mask + masked-image latents)
        kind = " (an instruct-pix2pix UNet, not supported yet)" if extra == info.latent_channels else ""
        raise ValueError(f"model {model!r}: the UNet takes {info.unet_in_channels} input channels for "
                         f"{info.latent_channels}-channel latents{kind}; supported: latents alone or inpainting "
                         f"(latents + 5)")
    backend_impl = TorchBackend(unet, text_encoder, vae_model, device=device, dtype=dtype)
    return Pipeline(backend_impl, get_tokenizer(), model_sigmas, info, batch_invariant=batch_invariant)
