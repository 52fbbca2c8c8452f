"""A tiny random SDXL (the real block structure at small widths) and its refiner, built as
diffusers pipelines: the reference for sdrt's SDXL path (fixtures in conftest.py)."""
import dataclasses

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from sdrt.models.architectures import ARCHITECTURES
from sdrt.prompt import get_tokenizer
from sdrt.prompt.tokenizer import make_tokenizer

TEXT = dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=3,
            max_position_embeddings=77, vocab_size=49408, projection_dim=24, bos_token_id=49406, eos_token_id=49407)


def tiny_sdxl_architecture(refiner: bool = False):
    """SDXL's (or the refiner's) structure at small widths."""
    base = ARCHITECTURES["sdxl-refiner" if refiner else "sdxl"]
    unet = dict(base.unet, sample_size=8, norm_num_groups=8, block_out_channels=[32, 64, 64],
                down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                transformer_layers_per_block=[1, 2, 2], attention_head_dim=[2, 4, 4], addition_time_embed_dim=8,
                cross_attention_dim=32 if refiner else 64,
                projection_class_embeddings_input_dim=24 + (5 if refiner else 6) * 8)
    tes = {"text_encoder_2": dict(TEXT, hidden_act="gelu")}
    if not refiner:
        tes = {"text_encoder": dict(TEXT, hidden_act="quick_gelu"), **tes}
    vae = dict(base.vae, block_out_channels=[32, 32, 64, 64], norm_num_groups=8, sample_size=64)
    return dataclasses.replace(base, unet=unet, vae=vae, text_encoders=tes)


def tokenizer_2():
    """SDXL's second tokenizer: CLIP's vocabulary, padding with "!" (id 0) as OpenCLIP does."""
    return make_tokenizer(pad_token="!")


def build_pipeline(seed: int, refiner: bool = False, scaling_factor: float = 0.13025):
    arch = tiny_sdxl_architecture(refiner)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**arch.unet)
    vae = AutoencoderKL(**dict(arch.vae, scaling_factor=scaling_factor))
    encoders = {"text_encoder": None, "tokenizer": None} if refiner else {
        "text_encoder": CLIPTextModel(CLIPTextConfig(**arch.text_encoders["text_encoder"])),
        "tokenizer": get_tokenizer()}
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**arch.text_encoders["text_encoder_2"]))
    scheduler = EulerDiscreteScheduler(**{k: v for k, v in arch.scheduler.items()
                                          if k not in ("clip_sample", "set_alpha_to_one")})
    if refiner:
        from diffusers import StableDiffusionXLImg2ImgPipeline

        return StableDiffusionXLImg2ImgPipeline(vae=vae, unet=unet, scheduler=scheduler, text_encoder_2=text_encoder_2,
                                                tokenizer_2=tokenizer_2(), requires_aesthetics_score=True,
                                                force_zeros_for_empty_prompt=False, **encoders)
    return StableDiffusionXLPipeline(vae=vae, unet=unet, scheduler=scheduler, text_encoder_2=text_encoder_2,
                                     tokenizer_2=tokenizer_2(), **encoders)
