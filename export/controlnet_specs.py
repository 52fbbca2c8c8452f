"""Export specs of ControlNet (sdrt.control): a ControlNet as its own graph and the UNet taking its
residuals as inputs, declared once here for every exporter.

- controlnet: (sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale
  [, text_embeds, time_ids]) -> down_0 .. down_{n-1}, mid. ``conditioning_scale`` is one number
  per row, so a caller can scale the conditional and unconditional rows apart (the extension's
  "ControlNet is more important"); per-residual soft weights stay outside the graph.
- unet_controlled: the UNet's inputs plus down_0 .. down_{n-1}, mid, added to its skip
  connections and mid block (diffusers' down_block_additional_residuals).

The number of residuals and their widths follow the model (13 for SD1, 10 for SDXL, 5 for the
toy), so these specs are built from the loaded modules (`controlnet_components`). Spatial axes are
named by their downsampling factor (h1, h2, h4, ...): a ControlNet output and the UNet input it
feeds share the name.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch

from .specs import TOKENS, ComponentSpec, TensorSpec


def residual_layout(controlnet) -> list[tuple[int, int]]:
    """(channels, downsampling factor) of each residual: the down blocks', then the mid block's."""
    layout, factor = [(int(controlnet.conv_in.out_channels), 1)], 1
    for block in controlnet.down_blocks:
        for resnet in block.resnets:
            layout.append((int(resnet.out_channels), factor))
        if block.downsamplers:
            factor *= 2
            layout.append((int(block.downsamplers[0].out_channels), factor))
    return layout + [(int(controlnet.config.block_out_channels[-1]), factor)]


def residual_names(count: int) -> list[str]:
    return [f"down_{i}" for i in range(count - 1)] + ["mid"]


def _residual_specs(controlnet) -> tuple[TensorSpec, ...]:
    layout = residual_layout(controlnet)
    return tuple(TensorSpec(name, ("batch", channels, f"h{factor}", f"w{factor}"))
                 for name, (channels, factor) in zip(residual_names(len(layout)), layout))


class ControlNetForExport(torch.nn.Module):
    def __init__(self, controlnet, added: bool):
        super().__init__()
        self.controlnet, self.added = controlnet, added

    def forward(self, sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale, *added):
        kwargs = {"added_cond_kwargs": {"text_embeds": added[0], "time_ids": added[1]}} if self.added else {}
        down, mid = self.controlnet(sample, timestep, encoder_hidden_states, controlnet_cond, return_dict=False,
                                    **kwargs)
        scale = conditioning_scale.reshape(-1, 1, 1, 1)
        return (*[d * scale for d in down], mid * scale)


class UNetWithResidualsForExport(torch.nn.Module):
    def __init__(self, unet, added: bool, count: int):
        super().__init__()
        self.unet, self.added, self.count = unet, added, count

    def forward(self, sample, timestep, encoder_hidden_states, *rest):
        kwargs = {}
        if self.added:
            kwargs["added_cond_kwargs"] = {"text_embeds": rest[0], "time_ids": rest[1]}
            rest = rest[2:]
        down, mid = list(rest[:self.count - 1]), rest[self.count - 1]
        return self.unet(sample, timestep, encoder_hidden_states, down_block_additional_residuals=down,
                         mid_block_additional_residual=mid, return_dict=False, **kwargs)[0]


def _inputs(unet, added: bool) -> tuple[TensorSpec, ...]:
    base = (TensorSpec("sample", ("batch", 4, "h1", "w1")), TensorSpec("timestep", ("batch",)),
            TensorSpec("encoder_hidden_states", ("batch", "tokens", int(unet.config.cross_attention_dim))))
    if not added:
        return base
    return base + (TensorSpec("text_embeds", ("batch", "pooled")), TensorSpec("time_ids", ("batch", "time_ids")))


def sample_inputs(unet, controlnet, *, residuals: bool, dtype=torch.float32, batch: int = 2,
                  size: int | None = None) -> tuple[torch.Tensor, ...]:
    """Inputs of the `controlnet` graph (or, with `residuals`, of `unet_controlled`) at latent
    `size` (default: the UNet's sample size): random, in the specs' order."""
    added = getattr(unet.config, "addition_embed_type", None) == "text_time"
    size = size or int(unet.config.sample_size)
    g = torch.Generator().manual_seed(0)
    inputs = [torch.randn(batch, 4, size, size, generator=g).to(dtype), torch.tensor([500.0] * batch, dtype=dtype),
              torch.randn(batch, TOKENS, int(unet.config.cross_attention_dim), generator=g).to(dtype)]
    if not residuals:
        inputs += [torch.rand(batch, 3, size * 8, size * 8, generator=g).to(dtype), torch.ones(batch, dtype=dtype)]
    if added:
        pooled = int(unet.config.projection_class_embeddings_input_dim) - 6 * int(unet.config.addition_time_embed_dim)
        inputs += [torch.randn(batch, pooled, generator=g).to(dtype),
                   torch.tensor([[size * 8, size * 8, 0, 0, size * 8, size * 8]] * batch, dtype=dtype)]
    if residuals:
        inputs += [torch.randn(batch, c, -(-size // f), -(-size // f), generator=g).to(dtype) * 0.1
                   for c, f in residual_layout(controlnet)]
    return tuple(inputs)


def controlnet_components(unet, controlnet) -> dict[str, ComponentSpec]:
    """The specs of `controlnet` and of `unet` taking its residuals. Their `wrap` / `sample` take
    an object with .unet and .controlnet (`pair(unet, controlnet)`)."""
    added = getattr(unet.config, "addition_embed_type", None) == "text_time"
    residuals, inputs = _residual_specs(controlnet), _inputs(unet, added)
    count = len(residuals)
    control_inputs = inputs[:3] + (TensorSpec("controlnet_cond", ("batch", 3, "image_height", "image_width")),
                                   TensorSpec("conditioning_scale", ("batch",))) + inputs[3:]
    return {
        "controlnet": ComponentSpec("controlnet", control_inputs, residuals,
                                    lambda p: ControlNetForExport(p.controlnet, added),
                                    lambda p, dtype: sample_inputs(p.unet, p.controlnet, residuals=False, dtype=dtype)),
        "unet_controlled": ComponentSpec("unet_controlled", inputs + residuals,
                                         (TensorSpec("out_sample", ("batch", 4, "h1", "w1")),),
                                         lambda p: UNetWithResidualsForExport(p.unet, added, count),
                                         lambda p, dtype: sample_inputs(p.unet, p.controlnet, residuals=True,
                                                                        dtype=dtype)),
    }


def pair(unet, controlnet) -> SimpleNamespace:
    """What the ControlNet specs' wrap / sample read."""
    return SimpleNamespace(unet=unet, controlnet=controlnet)
