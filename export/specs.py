"""Export specs: each component's inputs, outputs, dynamic axes, sample inputs and shape ranges,
declared once. The ONNX exporter, the ONNX Runtime backend (and later TensorRT profiles and Core
ML shapes) read them from here; nothing about a model's I/O is written anywhere else.

The modules exported are thin wrappers that fix the calling convention:
- text_encoder: token embeddings in (the lookup happens outside, so textual-inversion vectors can
  replace rows), the final-layer-normed hidden state of every layer out (clip skip picks one);
- unet: (sample, timestep, encoder_hidden_states) -> noise prediction;
- vae_decoder: unscaled latents -> image in [-1, 1]; vae_encoder: image -> posterior mean.

SDXL models (``SDXL_COMPONENTS``; ``components_for`` picks the set a loaded model takes) differ
in what their text encoders return and what their UNet takes (sdrt.models.sdxl_text,
sdrt.pipelines.sdxl):
- text_encoder (CLIP-L): token embeddings in, the penultimate layer's hidden states *without* the
  final layer norm out (SDXL ignores clip skip, so one layer is enough);
- text_encoder_2 (OpenCLIP bigG): the same, plus the pooled projected output, pooled at
  `eos_index` (the graph never sees ids; the backend passes OpenCLIP's argmax of the ids);
- unet: also `text_embeds` (the pooled text) and `time_ids` (6 size / crop ids, 5 on a refiner),
  diffusers' ``added_cond_kwargs``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from sdrt.models.architectures import is_sdxl

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
    # (pipeline) -> manifest entries a backend needs besides the I/O (SD's clip skip: layer count)
    facts: Optional[Callable] = None

    @property
    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {t.name: {i: d for i, d in enumerate(t.dims) if isinstance(d, str)}
                for t in (*self.inputs, *self.outputs)}

    @property
    def token_lookup(self) -> bool:
        """The graph takes token embeddings: the backend looks the ids up in this component's
        table (saved beside the graph), so textual-inversion vectors can replace rows."""
        return self.inputs[0].name == "inputs_embeds"


# Shape ranges the engines are built for (batch includes the CFG doubling; sizes in pixels).
PROFILES = {
    "sd1": {"batch": (1, 16), "size": (256, 1024), "text_chunks": (1, 4)},
    "sd2": {"batch": (1, 16), "size": (256, 1024), "text_chunks": (1, 4)},
    "toy": {"batch": (1, 16), "size": (64, 256), "text_chunks": (1, 4)},
    # SDXL's UNet is ~3x SD1's at 4x the pixels: a smaller batch range keeps engines buildable
    "sdxl": {"batch": (1, 8), "size": (512, 1536), "text_chunks": (1, 4)},
    "sdxl-refiner": {"batch": (1, 8), "size": (512, 1536), "text_chunks": (1, 4)},
    "toy-xl": {"batch": (1, 16), "size": (64, 256), "text_chunks": (1, 4)},
}


def _run_on_embeddings(text_encoder, inputs_embeds: torch.Tensor):
    """The CLIP text model's output (every layer's hidden states) with `inputs_embeds` in place of
    its token lookup."""
    embedding = text_encoder.get_input_embeddings()
    handle = embedding.register_forward_hook(lambda module, args, out: inputs_embeds)
    try:
        ids = torch.zeros(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        # explicit positions: CLIP's own slice of its position-id buffer exports as an alias,
        # which Core ML's converter does not take
        positions = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device).unsqueeze(0)
        return text_encoder(ids, position_ids=positions, output_hidden_states=True)
    finally:
        handle.remove()


class TextEncoderForExport(torch.nn.Module):
    """CLIP text model fed token embeddings; returns final_layer_norm(hidden_states[i]) for every
    layer i = 1..L stacked on dim 0, so clip skip N is row L - N (A1111: hidden_states[-N], then the
    final layer norm)."""

    def __init__(self, text_encoder):
        super().__init__()
        self.text_encoder = text_encoder
        self.override = None

    def forward(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        out = _run_on_embeddings(self.text_encoder, inputs_embeds)
        text_model = getattr(self.text_encoder, "text_model", self.text_encoder)
        return torch.stack([text_model.final_layer_norm(h) for h in out.hidden_states[1:]])


class SDXLTextEncoderForExport(torch.nn.Module):
    """An SDXL text encoder fed token embeddings (sdrt.models.sdxl_text): hidden_states[-2] without
    the final layer norm; with `pooled` (text_encoder_2) also the projected, final-normed state at
    `eos_index`. The ids stay outside, so the pooling position comes in as an input."""

    def __init__(self, text_encoder, pooled: bool):
        super().__init__()
        self.text_encoder, self.pooled = text_encoder, pooled

    def forward(self, inputs_embeds: torch.Tensor, eos_index: Optional[torch.Tensor] = None):
        out = _run_on_embeddings(self.text_encoder, inputs_embeds)
        hidden = out.hidden_states[-2]
        if not self.pooled:
            return hidden
        last = out.last_hidden_state  # final-layer-normed, as transformers pools it
        index = eos_index.reshape(-1, 1, 1).expand(-1, 1, last.shape[-1])  # a gather: no batch-sized constant
        return hidden, self.text_encoder.text_projection(last.gather(1, index).squeeze(1))


class UNetForExport(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]


class SDXLUNetForExport(torch.nn.Module):
    """SDXL's UNet with its added conditions (diffusers' added_cond_kwargs) as plain inputs."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states, text_embeds, time_ids):
        added = {"text_embeds": text_embeds, "time_ids": time_ids}
        return self.unet(sample, timestep, encoder_hidden_states, added_cond_kwargs=added, return_dict=False)[0]


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


def _text_2_sample(pipe, dtype):
    width = pipe.text_encoder_2.config.hidden_size
    return torch.randn(2, TOKENS, width, dtype=dtype), torch.randint(1, TOKENS, (2,), dtype=torch.int64)


def _unet_sample(pipe, dtype):
    unet = pipe.unet
    size = int(unet.config.sample_size)
    return (torch.randn(2, unet.config.in_channels, size, size, dtype=dtype), torch.tensor([500.0, 500.0], dtype=dtype),
            torch.randn(2, TOKENS, unet.config.cross_attention_dim, dtype=dtype))


def added_unet_sample(pipe, batch: int, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """SDXL UNet's (text_embeds, time_ids) for `batch` rows: random pooled text, ids as sizes up to
    the model's native pixels (their sinusoidal embedding sees realistic magnitudes)."""
    pooled = int(pipe.text_encoder_2.config.projection_dim)
    pixels = int(pipe.unet.config.sample_size) * 8
    return (torch.randn(batch, pooled, dtype=dtype),
            torch.rand(batch, int(pipe.info.added_time_ids), dtype=dtype) * pixels)


def _sdxl_unet_sample(pipe, dtype):
    return _unet_sample(pipe, dtype) + added_unet_sample(pipe, 2, dtype)


def _decoder_sample(pipe, dtype):
    size = int(pipe.unet.config.sample_size)
    return (torch.randn(1, pipe.vae.config.latent_channels, size, size, dtype=dtype),)


def _encoder_sample(pipe, dtype):
    size = int(pipe.unet.config.sample_size) * 8
    return (torch.rand(1, 3, size, size, dtype=dtype) * 2 - 1,)


def _clip_skip_facts(pipe) -> dict:
    """SD's text encoder returns every layer: the backend needs their count for clip skip."""
    return {"text_layers": int(pipe.text_encoder.config.num_hidden_layers),
            "text_width": int(pipe.text_encoder.config.hidden_size)}


_UNET_INPUTS = (TensorSpec("sample", ("batch", "channels", "height", "width")), TensorSpec("timestep", ("batch",)),
                TensorSpec("encoder_hidden_states", ("batch", "tokens", "context")))
_UNET_OUTPUTS = (TensorSpec("out_sample", ("batch", 4, "height", "width")),)
_EMBEDS = TensorSpec("inputs_embeds", ("batch", TOKENS, "width"))  # one chunk
_VAE = (
    ComponentSpec("vae_decoder", (TensorSpec("latent", ("batch", 4, "height", "width")),),
                  (TensorSpec("image", ("batch", 3, "image_height", "image_width")),),
                  lambda pipe: VaeDecoderForExport(pipe.vae), _decoder_sample),
    ComponentSpec("vae_encoder", (TensorSpec("image", ("batch", 3, "image_height", "image_width")),),
                  (TensorSpec("latent", ("batch", 4, "height", "width")),),
                  lambda pipe: VaeEncoderForExport(pipe.vae), _encoder_sample),
)

# SD1 / SD2 / toy
COMPONENTS: dict[str, ComponentSpec] = {spec.name: spec for spec in (
    ComponentSpec("text_encoder", (_EMBEDS,), (TensorSpec("hidden_states", ("layers", "batch", TOKENS, "width")),),
                  lambda pipe: TextEncoderForExport(pipe.text_encoder), _text_sample, _clip_skip_facts),
    ComponentSpec("unet", _UNET_INPUTS, _UNET_OUTPUTS, lambda pipe: UNetForExport(pipe.unet), _unet_sample),
    *_VAE,
)}

# SDXL base / refiner / toy-XL (a refiner has no text_encoder: components_for leaves it out)
SDXL_COMPONENTS: dict[str, ComponentSpec] = {spec.name: spec for spec in (
    ComponentSpec("text_encoder", (_EMBEDS,), (TensorSpec("hidden_states", ("batch", TOKENS, "width")),),
                  lambda pipe: SDXLTextEncoderForExport(pipe.text_encoder, pooled=False), _text_sample),
    ComponentSpec("text_encoder_2", (_EMBEDS, TensorSpec("eos_index", ("batch",), "int64")),
                  (TensorSpec("hidden_states", ("batch", TOKENS, "width")),
                   TensorSpec("text_embeds", ("batch", "pooled"))),
                  lambda pipe: SDXLTextEncoderForExport(pipe.text_encoder_2, pooled=True), _text_2_sample),
    ComponentSpec("unet", _UNET_INPUTS + (TensorSpec("text_embeds", ("batch", "pooled")),
                                          TensorSpec("time_ids", ("batch", "time_ids"))),
                  _UNET_OUTPUTS, lambda pipe: SDXLUNetForExport(pipe.unet), _sdxl_unet_sample),
    *_VAE,
)}


def is_sdxl_model(pipe) -> bool:
    """SDXL by its modules (a pipeline-like object may carry no model facts): a second text encoder,
    or a UNet with SDXL's added "text_time" embedding."""
    unet_config = getattr(getattr(pipe, "unet", None), "config", None)
    return (getattr(pipe, "text_encoder_2", None) is not None
            or getattr(unet_config, "addition_embed_type", None) == "text_time")


def components_for(pipe) -> dict[str, ComponentSpec]:
    """The specs of the components this loaded model has, in export order: SD's set, or SDXL's
    without the text encoders it lacks (a refiner has only text_encoder_2)."""
    if not is_sdxl_model(pipe):
        return COMPONENTS
    return {name: spec for name, spec in SDXL_COMPONENTS.items()
            if not name.startswith("text_encoder") or getattr(pipe, name, None) is not None}


def components_for_family(family: str) -> dict[str, ComponentSpec]:
    """The spec set of a model family (sdrt.models.architectures), for what only has an export's
    model facts (TensorRT profiles)."""
    return SDXL_COMPONENTS if is_sdxl(family) else COMPONENTS


def model_widths(pipe) -> dict[str, int]:
    """The fixed widths of the dynamic-named axes, for engine profiles (tensorrt_export): the
    UNet's context, each text encoder's embeddings and SDXL's pooled text."""
    widths = {"context_width": int(pipe.unet.config.cross_attention_dim)}
    if getattr(pipe, "text_encoder", None) is not None:
        widths["text_width"] = int(pipe.text_encoder.config.hidden_size)
    if getattr(pipe, "text_encoder_2", None) is not None:
        widths["text_width_2"] = int(pipe.text_encoder_2.config.hidden_size)
        widths["pooled_width"] = int(pipe.text_encoder_2.config.projection_dim)
    return widths
