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


# Toy ControlNets: the toy UNet's encoder (Zhang et al. 2023, "Adding Conditional Control to
# Text-to-Image Diffusion Models") with the 4-level hint encoder of the originals (8 convolutions,
# so diffusers' single-file converter maps it) at narrower widths, and a mid block without
# attention: together they keep each shipped file near 2 MB.
CONTROLNET_HINT_CHANNELS = (16, 32, 64, 64)
CONTROLNET_MID_BLOCK = "UNetMidBlock2D"
_CONTROLNET_FROM_UNET = ("in_channels", "flip_sin_to_cos", "freq_shift", "down_block_types", "only_cross_attention",
                         "block_out_channels", "layers_per_block", "downsample_padding", "mid_block_scale_factor",
                         "act_fn", "norm_num_groups", "norm_eps", "cross_attention_dim", "attention_head_dim",
                         "use_linear_projection", "upcast_attention", "resnet_time_scale_shift")


def build_controlnet(unet):
    """A toy ControlNet initialised from `unet` (the trained toy UNet): its encoder's weights copied
    (the paper's trainable copy), the zero convolutions zero, the hint encoder fresh."""
    from diffusers import ControlNetModel

    config = {k: unet.config[k] for k in _CONTROLNET_FROM_UNET}
    controlnet = ControlNetModel(**config, mid_block_type=CONTROLNET_MID_BLOCK,
                                 conditioning_embedding_out_channels=CONTROLNET_HINT_CHANNELS)
    for name in ("conv_in", "time_proj", "time_embedding", "down_blocks"):
        getattr(controlnet, name).load_state_dict(getattr(unet, name).state_dict())
    first_resnet = {k[len("resnets.0."):]: v for k, v in unet.mid_block.state_dict().items()
                    if k.startswith("resnets.0.")}
    controlnet.mid_block.resnets[0].load_state_dict(first_resnet)
    return controlnet
