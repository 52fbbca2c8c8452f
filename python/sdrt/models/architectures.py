"""The model architectures sdrt knows, as diffusers / transformers configs shipped in the package
(no hub access), and their detection from a checkpoint's keys and shapes.

The configs are the published ones of the reference models (runwayml SD 1.5 and its inpainting
model, stabilityai SD 2.1 / 2.1-base / 2-inpainting, SDXL base 1.0), written as the entries that
differ from the diffusers / transformers class defaults. Detection follows A1111's
``guess_model_config_from_state_dict`` (modules/sd_models_config.py): the text encoder's layout
tells SD1 / SD2 / SDXL apart, the UNet's first convolution the inpainting (9) and instruct-pix2pix
(8) variants; SD2's v-prediction is settled by running the UNet (see ``sdrt.loaders.single_file``).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Optional, Sequence

from . import toy, toy_xl

CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
              hidden_act="quick_gelu", projection_dim=768, max_position_embeddings=77, vocab_size=49408)
# OpenCLIP ViT-H/14 as SD2 uses it: the penultimate layer, so 23 of its 24 layers (diffusers' layout)
OPEN_CLIP_H = dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=23,
                   hidden_act="gelu", projection_dim=512, max_position_embeddings=77, vocab_size=49408)
OPEN_CLIP_BIG_G = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
                       hidden_act="gelu", projection_dim=1280, max_position_embeddings=77, vocab_size=49408)

SD_VAE = dict(block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
              up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=4, layers_per_block=2, sample_size=512,
              scaling_factor=0.18215)
SD1_UNET = dict(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
SD2_UNET = dict(sample_size=96, cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20],
                use_linear_projection=True, upcast_attention=True)
SDXL_UNET = dict(sample_size=128, cross_attention_dim=2048, attention_head_dim=[5, 10, 20], use_linear_projection=True,
                 block_out_channels=[320, 640, 1280], transformer_layers_per_block=[1, 2, 10],
                 down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                 up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                 addition_embed_type="text_time", addition_time_embed_dim=256,
                 projection_class_embeddings_input_dim=2816)
# stabilityai/stable-diffusion-xl-refiner-1.0: OpenCLIP bigG alone, aesthetic score instead of target size
SDXL_REFINER_UNET = dict(sample_size=128, cross_attention_dim=1280, attention_head_dim=[6, 12, 24, 24],
                         use_linear_projection=True, block_out_channels=[384, 768, 1536, 1536],
                         transformer_layers_per_block=4,
                         down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
                         up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                         addition_embed_type="text_time", addition_time_embed_dim=256,
                         projection_class_embeddings_input_dim=2560)
SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                 prediction_type="epsilon", steps_offset=1, clip_sample=False, set_alpha_to_one=False,
                 timestep_spacing="leading")


@dataclass(frozen=True)
class Architecture:
    name: str                       # sdrt's id, also written as metadata when saving a single file
    family: str                     # "sd1" | "sd2" | "toy" (SD1-shaped) | SDXL_FAMILIES
    unet: Mapping[str, Any]
    vae: Mapping[str, Any]
    text_encoders: Mapping[str, Mapping[str, Any]]  # diffusers component name -> CLIPTextConfig entries
    scheduler: Mapping[str, Any] = field(default_factory=lambda: dict(SCHEDULER))
    modelspec: Optional[str] = None  # Stability's "modelspec.architecture" (A1111 reads it)

    @property
    def prediction_type(self) -> str:
        return self.scheduler["prediction_type"]

    @property
    def unet_in_channels(self) -> int:
        return int(self.unet.get("in_channels", 4))

    @property
    def resolution(self) -> int:
        return int(self.unet["sample_size"]) * 8


def _variant(base: Architecture, name: str, *, in_channels: int | None = None, prediction: str | None = None,
             modelspec: str | None = None, **unet_overrides) -> Architecture:
    unet = dict(base.unet, **unet_overrides)
    if in_channels is not None:
        unet["in_channels"] = in_channels
    scheduler = dict(base.scheduler, **({"prediction_type": prediction} if prediction else {}))
    return replace(base, name=name, unet=unet, scheduler=scheduler, modelspec=modelspec)


SD1 = Architecture("sd1", "sd1", SD1_UNET, SD_VAE, {"text_encoder": CLIP_L}, modelspec="stable-diffusion-v1")
SD2 = Architecture("sd2", "sd2", dict(SD2_UNET, sample_size=64, upcast_attention=False), SD_VAE,
                   {"text_encoder": OPEN_CLIP_H}, modelspec="stable-diffusion-v2-512")
SDXL = Architecture("sdxl", "sdxl", SDXL_UNET, dict(SD_VAE, sample_size=1024, scaling_factor=0.13025),
                    {"text_encoder": CLIP_L, "text_encoder_2": OPEN_CLIP_BIG_G},
                    modelspec="stable-diffusion-xl-v1-base")
SDXL_REFINER = Architecture("sdxl-refiner", "sdxl-refiner", SDXL_REFINER_UNET, SDXL.vae,
                            {"text_encoder_2": OPEN_CLIP_BIG_G}, modelspec="stable-diffusion-xl-v1-refiner")
# Families conditioned the SDXL way (sgm's conditioner: penultimate states, pooled text, size ids)
SDXL_FAMILIES = ("sdxl", "sdxl-refiner", "toy-xl")


def is_sdxl(family: str) -> bool:
    return family in SDXL_FAMILIES


def text_components(family: str) -> tuple[str, ...]:
    """A family's text encoders, in the order their outputs are concatenated."""
    if family == "sdxl-refiner":
        return ("text_encoder_2",)
    return ("text_encoder", "text_encoder_2") if is_sdxl(family) else ("text_encoder",)


def _shipped_toy_scaling_factor() -> float:
    """The toy VAE's scaling factor is measured when it is trained (1 / std of its latents); the
    shipped model's is the toy architecture's default, as 0.18215 is SD's."""
    import json
    from importlib.resources import files

    config = files("sdrt.toy") / "weights" / "vae" / "config.json"
    return float(json.loads(config.read_text())["scaling_factor"]) if config.is_file() else 0.18215


TOY = Architecture("toy", "toy", dict(toy.UNET_CONFIG), dict(toy.VAE_CONFIG, scaling_factor=_shipped_toy_scaling_factor()),
                   {"text_encoder": {k: v for k, v in toy.TEXT_ENCODER_CONFIG.items()}},
                   scheduler=dict(SCHEDULER, **{k: toy.SCHEDULER_CONFIG[k] for k in ("prediction_type", "steps_offset")}),
                   modelspec="sdrt-toy-v1")

TOY_XL = Architecture("toy-xl", "toy-xl", dict(toy_xl.UNET_CONFIG), TOY.vae,
                      {"text_encoder": dict(TOY.text_encoders["text_encoder"]),
                       "text_encoder_2": dict(toy_xl.TEXT_ENCODER_2_CONFIG)},
                      scheduler=TOY.scheduler, modelspec="sdrt-toy-xl-v1")

ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    SD1,
    _variant(SD1, "sd1-inpainting", in_channels=9, modelspec="stable-diffusion-v1-inpainting"),
    _variant(SD1, "sd1-instruct-pix2pix", in_channels=8, modelspec="stable-diffusion-v1-instruct-pix2pix"),
    SD2,
    # 768-v: attention upcast to fp32 (its published config; fp16 softmax overflows without it)
    _variant(SD2, "sd2-v", prediction="v_prediction", sample_size=96, upcast_attention=True,
             modelspec="stable-diffusion-v2-768-v"),
    _variant(SD2, "sd2-inpainting", in_channels=9, modelspec="stable-diffusion-v2-inpainting"),
    SDXL,
    _variant(SDXL, "sdxl-inpainting", in_channels=9, modelspec="stable-diffusion-xl-v1-inpainting"),
    SDXL_REFINER,
    TOY,
    TOY_XL,
    _variant(TOY, "toy-inpainting", in_channels=9, modelspec="sdrt-toy-v1-inpainting"),
)}
BY_MODELSPEC = {a.modelspec: a for a in ARCHITECTURES.values()}

# Keys that tell the families apart (A1111 sd_models_config / diffusers CHECKPOINT_KEY_NAMES).
UNET_INPUT = "model.diffusion_model.input_blocks.0.0.weight"
UNET_CONTEXT = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
SD2_TEXT = "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"
SDXL_TEXT_2 = "conditioner.embedders.1.model.ln_final.weight"
SDXL_REFINER_TEXT = "conditioner.embedders.0.model.ln_final.weight"
SD1_TEXT = ("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
            "cond_stage_model.transformer.embeddings.token_embedding.weight")


def detect_architecture(shapes: Mapping[str, Sequence[int]], metadata: Mapping[str, str] | None = None,
                        *, source: str = "checkpoint") -> Architecture:
    """The architecture of an original-layout (LDM) checkpoint from its keys and shapes alone (no
    tensor is read). ``metadata["modelspec.architecture"]`` wins when it names a known one. SD2
    comes back as "sd2" (epsilon); telling "sd2-v" apart needs the UNet itself. Raises ValueError
    naming `source` when the layout is none of these."""
    found = _detect_from_shapes(shapes, source)
    labelled = BY_MODELSPEC.get((metadata or {}).get("modelspec.architecture"))
    # the label only refines what the shapes say (SD2 512 vs 768-v); a label that disagrees with
    # the tensors (e.g. a toy-shaped file labelled SD1) is not trusted
    if labelled is not None and labelled.family == found.family and labelled.unet_in_channels == found.unet_in_channels:
        return labelled
    return found


def _detect_from_shapes(shapes: Mapping[str, Sequence[int]], source: str) -> Architecture:
    if UNET_INPUT not in shapes:
        raise ValueError(f"{source}: no UNet found (no key {UNET_INPUT!r}); is this a LoRA, a VAE or an embedding "
                         "rather than a checkpoint?")
    in_channels = int(shapes[UNET_INPUT][1])
    suffix = {4: "", 9: "-inpainting", 8: "-instruct-pix2pix"}.get(in_channels)
    if suffix is None:
        raise ValueError(f"{source}: the UNet takes {in_channels} input channels; known: 4, 9 (inpainting), "
                         "8 (instruct-pix2pix)")
    if SDXL_TEXT_2 in shapes:
        family = "toy-xl" if int(shapes[UNET_INPUT][0]) == toy_xl.UNET_CONFIG["block_out_channels"][0] else "sdxl"
    elif SDXL_REFINER_TEXT in shapes:
        family = "sdxl-refiner"
    elif SD2_TEXT in shapes:  # OpenCLIP (1024 wide in every published SD2 file)
        family = "sd2"
    elif any(k in shapes for k in SD1_TEXT):
        family = family_of(int(shapes[UNET_INPUT][0]), 0)
    else:
        raise ValueError(f"{source}: no text encoder in a layout sdrt knows (SD1 CLIP, SD2 OpenCLIP, SDXL)")
    name = family + suffix
    if name not in ARCHITECTURES:
        raise ValueError(f"{source}: {family} with {in_channels} UNet input channels is not supported")
    return ARCHITECTURES[name]


def family_of(unet_width: int, text_width: int, *, text_encoders: Sequence[str] = ("text_encoder",)) -> str:
    """The family of loaded modules: SDXL by its second text encoder (the refiner has only that
    one), toy and toy-XL by their UNet's first width, SD2 by its 1024 wide text encoder (OpenCLIP H)."""
    if "text_encoder_2" in text_encoders:
        if "text_encoder" not in text_encoders:
            return "sdxl-refiner"
        return "toy-xl" if unet_width == toy_xl.UNET_CONFIG["block_out_channels"][0] else "sdxl"
    if text_width == 1024:
        return "sd2"
    return "toy" if unet_width == toy.UNET_CONFIG["block_out_channels"][0] else "sd1"


def architecture_for(family: str, unet_in_channels: int = 4, prediction_type: str = "epsilon") -> Architecture:
    """The known architecture of a loaded model (e.g. a diffusers folder) from its family, UNet
    input channels and prediction type."""
    if prediction_type == "v_prediction" and family != "sd2":
        raise ValueError(f"no known architecture for a v-prediction {family} model")
    name = family + ("-v" if family == "sd2" and prediction_type == "v_prediction" else "")
    name += {4: "", 9: "-inpainting", 8: "-instruct-pix2pix"}.get(unet_in_channels, "?")
    if name not in ARCHITECTURES:
        raise ValueError(f"no known architecture for a {family} model with {unet_in_channels} UNet input channels "
                         f"({prediction_type}); known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]
