"""Configs of the toy model family: the real SD1.x component classes at toy sizes.

AutoencoderKL (factor 8, 4 latent channels), CLIPTextModel (real CLIP BPE vocabulary, 77 positions)
and UNet2DConditionModel (SD1.x-style cross-attention, epsilon prediction) with the SD1.x
scaled-linear beta schedule over 1000 training steps.
"""
from __future__ import annotations

from typing import Any

RESOLUTION = 64
LATENT_CHANNELS = 4
TEXT_HIDDEN = 64

VAE_CONFIG: dict[str, Any] = dict(
    in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS,
    block_out_channels=(32, 32, 64, 64), layers_per_block=1,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    norm_num_groups=8, sample_size=RESOLUTION, act_fn="silu",
)

TEXT_ENCODER_CONFIG: dict[str, Any] = dict(
    vocab_size=49408, max_position_embeddings=77, hidden_size=TEXT_HIDDEN, intermediate_size=4 * TEXT_HIDDEN,
    num_hidden_layers=2, num_attention_heads=2, hidden_act="quick_gelu", projection_dim=TEXT_HIDDEN,
    bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
)

UNET_CONFIG: dict[str, Any] = dict(
    sample_size=RESOLUTION // 8, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS,
    layers_per_block=1, block_out_channels=(64, 128),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    cross_attention_dim=TEXT_HIDDEN, attention_head_dim=4, norm_num_groups=32,
)

# SD1.x's noise schedule, as in its scheduler_config.json.
SCHEDULER_CONFIG: dict[str, Any] = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    prediction_type="epsilon", steps_offset=1, timestep_spacing="leading",
)


def build_components(seed: int = 0, *, vae_channels=None, unet_channels=None):
    """Freshly initialised (vae, text_encoder, unet) of the toy architecture; `vae_channels` /
    `unet_channels` override block_out_channels (same number of blocks)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    vae_config, unet_config = dict(VAE_CONFIG), dict(UNET_CONFIG)
    for name, config, channels in (("vae_channels", vae_config, vae_channels),
                                   ("unet_channels", unet_config, unet_channels)):
        if channels is not None:
            if len(channels) != len(config["block_out_channels"]):
                raise ValueError(f"{name}={tuple(channels)}: needs {len(config['block_out_channels'])} entries")
            config["block_out_channels"] = tuple(channels)
    vae = AutoencoderKL(**vae_config)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_ENCODER_CONFIG))
    unet = UNet2DConditionModel(**unet_config)
    return vae, text_encoder, unet
