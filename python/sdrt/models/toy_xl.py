"""Configs of toy-XL: SDXL's component classes and conditioning at toy sizes.

What makes it SDXL-shaped: two text encoders whose penultimate hidden states are concatenated
(the toy's CLIP-L, shared with the toy model and frozen, then an OpenCLIP-style
CLIPTextModelWithProjection whose projected pooled output is the UNet's ``text_embeds``), a UNet
with ``addition_embed_type="text_time"`` (the six size / crop ids, Podell et al. 2023, sec. 2.2),
three levels with a two-deep transformer at the last one and in the middle block, and the toy's
VAE (so the latent space and its scaling factor are the toy's).
"""
from __future__ import annotations

from typing import Any

from . import toy

RESOLUTION = toy.RESOLUTION
TEXT_2_HIDDEN = 64
CONTEXT_DIM = toy.TEXT_HIDDEN + TEXT_2_HIDDEN
TIME_EMBED_DIM = 32  # per size / crop id (SDXL: 256)

TEXT_ENCODER_2_CONFIG: dict[str, Any] = dict(
    vocab_size=49408, max_position_embeddings=77, hidden_size=TEXT_2_HIDDEN, intermediate_size=4 * TEXT_2_HIDDEN,
    num_hidden_layers=3, num_attention_heads=2, hidden_act="gelu", projection_dim=TEXT_2_HIDDEN,
    bos_token_id=49406, eos_token_id=49407, pad_token_id=0,
)

UNET_CONFIG: dict[str, Any] = dict(
    sample_size=RESOLUTION // 8, in_channels=toy.LATENT_CHANNELS, out_channels=toy.LATENT_CHANNELS,
    layers_per_block=1, block_out_channels=(64, 64, 96),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 1, 2), attention_head_dim=(2, 2, 3), use_linear_projection=True,
    cross_attention_dim=CONTEXT_DIM, norm_num_groups=32,
    addition_embed_type="text_time", addition_time_embed_dim=TIME_EMBED_DIM,
    projection_class_embeddings_input_dim=TEXT_2_HIDDEN + 6 * TIME_EMBED_DIM,
)


def build_components(seed: int = 0):
    """Freshly initialised (text_encoder_2, unet) of toy-XL; the VAE and first text encoder are the toy's."""
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**TEXT_ENCODER_2_CONFIG))
    unet = UNet2DConditionModel(**UNET_CONFIG)
    return text_encoder_2, unet
