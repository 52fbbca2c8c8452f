"""Request and response shapes of A1111's /sdapi/v1 API (modules/api/models.py), with the server's
limits written into the field constraints, so a request past a limit is refused (422, naming the
field) before any model work and the OpenAPI schema documents every bound.

Unknown fields are ignored, as A1111 does (clients such as webuiapi send fields A1111 dropped
long ago); fields sdrt knows but does not implement are refused when set to anything but their
"off" value (see sdrt.server.requests)."""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model

from ..pipelines.params import GenerationParams
from .limits import Limits

_A1111 = ConfigDict(extra="ignore", allow_inf_nan=False)


def request_models(limits: Limits) -> tuple[type[BaseModel], type[BaseModel]]:
    """(txt2img, img2img) request models: the GenerationParams fields as A1111's API has them
    (their `api` metadata, bounded by `limits`) plus the fields only the server knows."""
    text_bounds = dict(max_length=limits.max_prompt_chars)
    image_bounds = dict(max_length=limits.max_image_b64_chars)

    class Txt2ImgServerFields(BaseModel):
        model_config = _A1111
        styles: Optional[list[str]] = Field(None, max_length=64)
        seed_resize_from_h: int = Field(-1, ge=-1, le=limits.max_side)
        seed_resize_from_w: int = Field(-1, ge=-1, le=limits.max_side)
        sampler_index: Optional[str] = Field("Euler", max_length=100)
        restore_faces: Optional[bool] = None
        tiling: Optional[bool] = None
        do_not_save_samples: bool = False
        do_not_save_grid: bool = False
        s_min_uncond: Optional[float] = Field(None, ge=0.0, le=100.0)
        override_settings: Optional[dict[str, Any]] = None
        override_settings_restore_afterwards: bool = True
        disable_extra_networks: bool = False
        script_name: Optional[str] = Field(None, max_length=1000)
        script_args: list[Any] = Field(default_factory=list, max_length=256)
        send_images: bool = True
        save_images: bool = False
        alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
        infotext: Optional[str] = Field(None, **text_bounds)

    txt2img = create_model("Txt2ImgRequest", __base__=Txt2ImgServerFields, **generation_fields(limits, False))

    class Img2ImgServerFields(txt2img):
        image_cfg_scale: Optional[float] = Field(None, ge=0.0, le=100.0)
        mask_blur_x: int = Field(4, ge=0, le=64)
        mask_blur_y: int = Field(4, ge=0, le=64)
        initial_noise_multiplier: Optional[float] = Field(None, ge=0.0, le=2.0)
        latent_mask: Optional[str] = Field(None, **image_bounds)
        include_init_images: bool = False

    img2img = create_model("Img2ImgRequest", __base__=Img2ImgServerFields, **generation_fields(limits, True))
    return txt2img, img2img


def generation_fields(limits: Limits, img2img: bool) -> dict[str, tuple]:
    """pydantic field definitions of the GenerationParams fields in A1111's request (`api`
    metadata): the img2img ones only for img2img. For strings and lists ge/le bound the length."""
    fields = {}
    for f in dataclasses.fields(GenerationParams):
        api = f.metadata["api"]
        if api is None or f.metadata["only"] not in (None, "img2img" if img2img else "txt2img"):
            continue
        limit = getattr(limits, api.limit) if api.limit else None
        sized = api.type in (str, Optional[str]) or typing.get_origin(api.type) is list
        low, high = api.ge, api.le if limit is None else limit
        bounds = dict(min_length=low, max_length=high) if sized else dict(ge=low, le=high)
        default = api.default
        if limit is not None and not sized and default is not None:
            default = min(default, limit)
        fields[f.name] = (api.type, Field(... if api.required else default,
                                          **{k: v for k, v in bounds.items() if v is not None}))
    return fields


class ImageResponse(BaseModel):
    images: Optional[list[str]] = Field(None, description="base64 PNG images with their infotext")
    parameters: dict[str, Any]
    info: str = Field(..., description="JSON string: seed, all_seeds, infotexts, ... (A1111's keys)")


class PngInfoRequest(BaseModel):
    model_config = _A1111
    image: str = Field(..., max_length=Limits().max_image_b64_chars)


class PngInfoResponse(BaseModel):
    info: str
    items: dict[str, Any]
    parameters: dict[str, Any]


class ProgressState(BaseModel):
    skipped: bool = False
    interrupted: bool = False
    stopping_generation: bool = False
    job: str = ""
    job_count: int = 0
    job_timestamp: str = "0"
    job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0


class ProgressResponse(BaseModel):
    progress: float
    eta_relative: float
    state: ProgressState
    current_image: Optional[str] = None
    textinfo: Optional[str] = None
    queue_length: int = Field(0, description="sdrt: jobs waiting behind the current one")


class SamplerItem(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, str]


class SchedulerItem(BaseModel):
    name: str
    label: str
    aliases: Optional[list[str]]
    default_rho: float
    need_inner_model: bool


class SDModelItem(BaseModel):
    title: str
    model_name: str
    hash: Optional[str]
    sha256: Optional[str]
    filename: str
    config: Optional[str] = None


class SDVaeItem(BaseModel):
    model_name: str
    filename: str


class LoraItem(BaseModel):
    name: str
    alias: str
    path: str
    metadata: dict[str, Any]


class EmbeddingItem(BaseModel):
    step: Optional[int] = None
    sd_checkpoint: Optional[str] = None
    sd_checkpoint_name: Optional[str] = None
    shape: int
    vectors: int


class EmbeddingsResponse(BaseModel):
    loaded: dict[str, EmbeddingItem]
    skipped: dict[str, EmbeddingItem | dict]


class HealthResponse(BaseModel):
    status: str
    model: Optional[str] = None
    queue_length: int = 0
