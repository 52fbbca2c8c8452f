"""Export specs: each component's inputs, outputs, dynamic axes, sample inputs and shape ranges,
declared once. The ONNX exporter, the ONNX Runtime backend (and later TensorRT profiles and Core
ML shapes) read them from here; nothing about a model's I/O is written anywhere else.

The modules exported are thin wrappers that fix the calling convention:
- text_encoder: token embeddings in (the lookup happens outside, so textual-inversion vectors can
  replace rows), the final-layer-normed hidden state of every layer out (clip skip picks one);
- unet: (sample, timestep, encoder_hidden_states) -> noise prediction;
- vae_decoder: unscaled latents -> image in [-1, 1]; vae_encoder: image -> posterior mean.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

TOKENS = 77  # one CLIP chunk; prompts are 77 * k long (A1111's 75-token chunks)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dims: tuple            # ints are fixed; strings name a dynamic axis
    dtype: str = "float"   # "float" follows the export precision; "int64" stays


@dataclass(frozen=True)
class ComponentSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    wrap: Callable          # (pipeline modules) -> torch module with this calling convention
    sample: Callable        # (pipeline, dtype) -> tuple of sample inputs

    @property
    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {t.name: {i: d for i, d in enumerate(t.dims) if isinstance(d, str)}
                for t in (*self.inputs, *self.outputs)}


# Shape ranges the engines are built for (batch includes the CFG doubling; sizes in pixels).
PROFILES = {
    "sd1": {"batch": (1, 16), "size": (256, 1024), "text_chunks": (1, 4)},
    "sd2": {"batch": (1, 16), "size": (256, 1024), "text_chunks": (1, 4)},
    "toy": {"batch": (1, 16), "size": (64, 256), "text_chunks": (1, 4)},
}


class TextEncoderForExport(torch.nn.Module):
    """CLIP text model fed token embeddings; returns final_layer_norm(hidden_states[i]) for every
    layer i = 1..L stacked on dim 0, so clip skip N is row L - N (A1111: hidden_states[-N], then the
    final layer norm)."""

    def __init__(self, text_encoder):
        super().__init__()
        self.text_encoder = text_encoder
        self.override = None

    def forward(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        embedding = self.text_encoder.get_input_embeddings()
        handle = embedding.register_forward_hook(lambda module, args, out: inputs_embeds)
        try:
            ids = torch.zeros(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
            # explicit positions: CLIP's own slice of its position-id buffer exports as an alias,
            # which Core ML's converter does not take
            positions = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device).unsqueeze(0)
            out = self.text_encoder(ids, position_ids=positions, output_hidden_states=True)
        finally:
            handle.remove()
        text_model = getattr(self.text_encoder, "text_model", self.text_encoder)
        return torch.stack([text_model.final_layer_norm(h) for h in out.hidden_states[1:]])


class UNetForExport(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]


class VaeDecoderForExport(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latent):
        return self.vae.decode(latent, return_dict=False)[0]


class VaeEncoderForExport(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, image):
        return self.vae.encode(image, return_dict=False)[0].mean


def _text_sample(pipe, dtype):
    width = pipe.text_encoder.config.hidden_size
    return (torch.randn(2, TOKENS, width, dtype=dtype),)


def _unet_sample(pipe, dtype):
    unet = pipe.unet
    size = int(unet.config.sample_size)
    return (torch.randn(2, unet.config.in_channels, size, size, dtype=dtype), torch.tensor([500.0, 500.0], dtype=dtype),
            torch.randn(2, TOKENS, unet.config.cross_attention_dim, dtype=dtype))


def _decoder_sample(pipe, dtype):
    size = int(pipe.unet.config.sample_size)
    return (torch.randn(1, pipe.vae.config.latent_channels, size, size, dtype=dtype),)


def _encoder_sample(pipe, dtype):
    size = int(pipe.unet.config.sample_size) * 8
    return (torch.rand(1, 3, size, size, dtype=dtype) * 2 - 1,)


COMPONENTS: dict[str, ComponentSpec] = {spec.name: spec for spec in (
    ComponentSpec("text_encoder", (TensorSpec("inputs_embeds", ("batch", TOKENS, "width")),),  # one chunk
                  (TensorSpec("hidden_states", ("layers", "batch", TOKENS, "width")),),
                  lambda pipe: TextEncoderForExport(pipe.text_encoder), _text_sample),
    ComponentSpec("unet", (TensorSpec("sample", ("batch", "channels", "height", "width")),
                           TensorSpec("timestep", ("batch",)),
                           TensorSpec("encoder_hidden_states", ("batch", "tokens", "context"))),
                  (TensorSpec("out_sample", ("batch", 4, "height", "width")),),
                  lambda pipe: UNetForExport(pipe.unet), _unet_sample),
    ComponentSpec("vae_decoder", (TensorSpec("latent", ("batch", 4, "height", "width")),),
                  (TensorSpec("image", ("batch", 3, "image_height", "image_width")),),
                  lambda pipe: VaeDecoderForExport(pipe.vae), _decoder_sample),
    ComponentSpec("vae_encoder", (TensorSpec("image", ("batch", 3, "image_height", "image_width")),),
                  (TensorSpec("latent", ("batch", 4, "height", "width")),),
                  lambda pipe: VaeEncoderForExport(pipe.vae), _encoder_sample),
)}
