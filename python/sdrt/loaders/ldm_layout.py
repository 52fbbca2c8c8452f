"""The original (LDM / CompVis) single-file key layout that A1111 and model sites use.

Reading it is diffusers' business: its ``single_file_utils`` converters (``convert_ldm_unet_checkpoint``,
``convert_ldm_vae_checkpoint``, ``convert_open_clip_checkpoint``) map original keys onto its
modules, and this module only drives them. Writing it (``save as single file``) has no library
function (diffusers keeps it in a script), so the inverse is written here from the block structure
both layouts share; tests check it by feeding what it writes back through diffusers' converters,
which must give back every tensor under its original name.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."     # SD1 (transformers' CLIP layout)
OPEN_CLIP_PREFIX = "cond_stage_model.model."                  # SD2 (OpenCLIP layout)
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer.text_model."
SDXL_OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."
SDXL_REFINER_OPEN_CLIP_PREFIX = "conditioner.embedders.0.model."  # the refiner's only text encoder


def text_encoder_prefix(family: str, component: str) -> str:
    """Where a family's text encoder `component` lives in a single file."""
    if family == "sd2":
        return OPEN_CLIP_PREFIX
    if family == "sdxl-refiner":
        return SDXL_REFINER_OPEN_CLIP_PREFIX
    if family in ("sdxl", "toy-xl"):
        return SDXL_OPEN_CLIP_PREFIX if component == "text_encoder_2" else SDXL_CLIP_PREFIX
    return CLIP_PREFIX


def is_open_clip(family: str, component: str) -> bool:
    """OpenCLIP's layout (SD2's encoder, SDXL's second) rather than transformers' CLIP layout."""
    return family == "sd2" or component == "text_encoder_2"

_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
             "class_embedding.linear_1": "label_emb.0.0", "class_embedding.linear_2": "label_emb.0.2"}
_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _layers_per_block(config: Mapping[str, Any]) -> int:
    n = config.get("layers_per_block", 2)
    if not isinstance(n, int):
        raise ValueError(f"UNet config: layers_per_block={n!r}; only one count for every block is supported")
    return n


def unet_key_to_ldm(key: str, config: Mapping[str, Any]) -> str:
    """One diffusers UNet2DConditionModel key -> its original name (without the UNet prefix)."""
    n = _layers_per_block(config)
    levels = len(config.get("block_out_channels", (320, 640, 1280, 1280)))
    up_types = config.get("up_block_types", ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                             "CrossAttnUpBlock2D"))
    module, _, param = key.rpartition(".")
    if module in _UNET_TOP:
        return f"{_UNET_TOP[module]}.{param}"
    m = re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key)
    if m:
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        return f"input_blocks.{1 + i * (n + 1) + j}.{_block_part(kind, rest)}"
    m = re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key)
    if m and int(m[1]) < levels - 1:
        return f"input_blocks.{1 + int(m[1]) * (n + 1) + n}.0.op.{m[2]}"
    m = re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key)
    if m:
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        return f"output_blocks.{i * (n + 1) + j}.{_block_part(kind, rest)}"
    m = re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key)
    if m and int(m[1]) < levels - 1:
        i = int(m[1])
        slot = 2 if up_types[i].startswith("CrossAttn") else 1  # after the attention when there is one
        return f"output_blocks.{i * (n + 1) + n}.{slot}.conv.{m[2]}"
    m = re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key)
    if m:
        slot = {("resnets", 0): 0, ("attentions", 0): 1, ("resnets", 1): 2}.get((m[1], int(m[2])))
        if slot is not None:  # the middle block's parts are numbered directly, without sub-slots
            return f"middle_block.{slot}.{_block_part(m[1], m[3]).split('.', 1)[1]}"
    raise ValueError(f"UNet key {key!r} has no place in the original layout")


def _block_part(kind: str, rest: str) -> str:
    """A resnet is slot 0 of its original block (with renamed layers), an attention slot 1 (names kept)."""
    if kind == "attentions":
        return f"1.{rest}"
    module, _, param = rest.rpartition(".")
    if module not in _UNET_RESNET:
        raise ValueError(f"UNet resnet layer {rest!r} has no place in the original layout")
    return f"0.{_UNET_RESNET[module]}.{param}"


def unet_to_ldm(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    return {UNET_PREFIX + unet_key_to_ldm(k, config): v for k, v in state.items()}


def vae_key_to_ldm(key: str, levels: int) -> str:
    """One diffusers AutoencoderKL key -> its original name (without the VAE prefix)."""
    key = re.sub(r"^(encoder|decoder)\.conv_norm_out\.", r"\1.norm_out.", key)
    m = re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key)
    if m:
        return f"encoder.down.{m[1]}.block.{m[2]}.{_vae_resnet(m[3])}"
    m = re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key)
    if m:
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
    # the decoder's up blocks are numbered from the lowest resolution in diffusers, the highest originally
    m = re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key)
    if m:
        return f"decoder.up.{levels - 1 - int(m[1])}.block.{m[2]}.{_vae_resnet(m[3])}"
    m = re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key)
    if m:
        return f"decoder.up.{levels - 1 - int(m[1])}.upsample.conv.{m[2]}"
    m = re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.([01])\.(.+)", key)
    if m:
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{_vae_resnet(m[3])}"
    m = re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)", key)
    if m and m[2] in _VAE_ATTENTION:
        return f"{m[1]}.mid.attn_1.{_VAE_ATTENTION[m[2]]}.{m[3]}"
    if re.fullmatch(r"(encoder|decoder)\.(conv_in|conv_out|norm_out)\.(weight|bias)|(post_)?quant_conv\.(weight|bias)",
                    key):
        return key
    raise ValueError(f"VAE key {key!r} has no place in the original layout")


def _vae_resnet(rest: str) -> str:
    return rest.replace("conv_shortcut.", "nin_shortcut.")


def vae_to_ldm(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The original VAE's mid-block attention projections are 1x1 convolutions (diffusers: linear)."""
    levels = len(config["block_out_channels"])
    out = {}
    for key, value in state.items():
        ldm = vae_key_to_ldm(key, levels)
        if ".mid.attn_1." in ldm and ldm.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]
        out[VAE_PREFIX + ldm] = value
    return out


def clip_to_ldm(state: Mapping[str, torch.Tensor], prefix: str = CLIP_PREFIX) -> dict[str, torch.Tensor]:
    """transformers' CLIPTextModel keys (nested under text_model. before transformers 5.6, flat after)
    under the original prefix, which keeps transformers' names."""
    out = {}
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue  # a buffer, not a weight
        out[prefix + key.removeprefix("text_model.")] = value
    return out


_OPEN_CLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
                    "self_attn.out_proj": "attn.out_proj"}
_OPEN_CLIP_TOP = {"embeddings.token_embedding.weight": "token_embedding.weight",
                  "embeddings.position_embedding.weight": "positional_embedding",
                  "final_layer_norm.weight": "ln_final.weight", "final_layer_norm.bias": "ln_final.bias"}


def open_clip_to_ldm(state: Mapping[str, torch.Tensor], prefix: str = OPEN_CLIP_PREFIX) -> dict[str, torch.Tensor]:
    """transformers' CLIP text model -> OpenCLIP's layout (SD2's text encoder, SDXL's second): the
    q/k/v projections are one in_proj, the projection is stored transposed."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        key = key.removeprefix("text_model.")
        if key.endswith("position_ids"):
            continue
        if key in _OPEN_CLIP_TOP:
            out[prefix + _OPEN_CLIP_TOP[key]] = value
            continue
        if key == "text_projection.weight":
            out[prefix + "text_projection"] = value.T.contiguous()
            continue
        m = re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", key)
        if not m:
            raise ValueError(f"text encoder key {key!r} has no place in OpenCLIP's layout")
        layer, module, param = int(m[1]), m[2], m[3]
        if module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
            qkv.setdefault((layer, param), {})[module[-6]] = value
        elif module in _OPEN_CLIP_LAYER:
            out[f"{prefix}transformer.resblocks.{layer}.{_OPEN_CLIP_LAYER[module]}.{param}"] = value
        else:
            raise ValueError(f"text encoder key {key!r} has no place in OpenCLIP's layout")
    for (layer, param), parts in qkv.items():
        out[f"{prefix}transformer.resblocks.{layer}.attn.in_proj_{param}"] = torch.cat([parts[c] for c in "qkv"])
    return out
