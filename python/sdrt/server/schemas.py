"""Request and response shapes of A1111's /sdapi/v1 API (modules/api/models.py), with the server's
limits written into the field constraints, so a request past a limit is refused (422, naming the
field) before any model work and the OpenAPI schema documents every bound.

Unknown fields are ignored, as A1111 does (clients such as webuiapi send fields A1111 dropped
long ago); fields sdrt knows but does not implement are refused when set to anything but their
"off" value (see sdrt.server.requests)."""
from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field

from ..pipelines.rng import MAX_SEED
from .limits import Limits

_A1111 = ConfigDict(extra="ignore", allow_inf_nan=False)


def request_models(limits: Limits) -> tuple[type[BaseModel], type[BaseModel]]:
    """(txt2img, img2img) request models bounded by `limits`; A1111's defaults (512 px, 50 steps)
    where the limits allow them, else the limit."""
    # (names unlike the fields': a class body looks up names it assigns in itself, not in this function)
    default_side = max(64, min(512, limits.max_side // 8 * 8))  # A1111's 512, unless the limit is lower
    side_bounds = dict(ge=64, le=limits.max_side)  # floored to a multiple of 8, as A1111's latents are
    text_bounds = dict(max_length=limits.max_prompt_chars)
    image_bounds = dict(max_length=limits.max_image_b64_chars)

    class Txt2ImgRequest(BaseModel):
        model_config = _A1111
        prompt: str = Field("", **text_bounds)
        negative_prompt: str = Field("", **text_bounds)
        styles: Optional[list[str]] = Field(None, max_length=64)
        seed: int = Field(-1, ge=-1, le=MAX_SEED)
        subseed: int = Field(-1, ge=-1, le=MAX_SEED)
        subseed_strength: float = Field(0.0, ge=0.0, le=1.0)
        seed_resize_from_h: int = Field(-1, ge=-1, le=limits.max_side)
        seed_resize_from_w: int = Field(-1, ge=-1, le=limits.max_side)
        sampler_name: Optional[str] = Field(None, max_length=100)
        sampler_index: Optional[str] = Field("Euler", max_length=100)
        scheduler: Optional[str] = Field(None, max_length=100)
        batch_size: int = Field(1, ge=1, le=limits.max_batch_size)
        n_iter: int = Field(1, ge=1, le=limits.max_n_iter)
        steps: int = Field(min(50, limits.max_steps), ge=1, le=limits.max_steps)
        cfg_scale: float = Field(7.0, ge=0.0, le=100.0)
        width: int = Field(default_side, **side_bounds)
        height: int = Field(default_side, **side_bounds)
        restore_faces: Optional[bool] = None
        tiling: Optional[bool] = None
        do_not_save_samples: bool = False
        do_not_save_grid: bool = False
        eta: Optional[float] = Field(None, ge=0.0, le=1.0)
        denoising_strength: Optional[float] = Field(None, ge=0.0, le=1.0)
        s_min_uncond: Optional[float] = Field(None, ge=0.0, le=100.0)
        s_churn: Optional[float] = Field(None, ge=0.0, le=100.0)
        s_tmax: Optional[float] = Field(None, ge=0.0, le=1e4)
        s_tmin: Optional[float] = Field(None, ge=0.0, le=1e4)
        s_noise: Optional[float] = Field(None, ge=0.0, le=2.0)
        override_settings: Optional[dict[str, Any]] = None
        override_settings_restore_afterwards: bool = True
        refiner_checkpoint: Optional[str] = Field(None, max_length=1000)
        refiner_switch_at: Optional[float] = Field(None, ge=0.0, le=1.0)
        disable_extra_networks: bool = False
        enable_hr: bool = False
        script_name: Optional[str] = Field(None, max_length=1000)
        script_args: list[Any] = Field(default_factory=list, max_length=256)
        send_images: bool = True
        save_images: bool = False
        alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
        infotext: Optional[str] = Field(None, **text_bounds)

    class Img2ImgRequest(Txt2ImgRequest):
        init_images: list[str] = Field(..., min_length=1, max_length=limits.max_init_images)
        resize_mode: int = Field(0, ge=0, le=2)
        denoising_strength: Optional[float] = Field(0.75, ge=0.0, le=1.0)
        image_cfg_scale: Optional[float] = Field(None, ge=0.0, le=100.0)
        mask: Optional[str] = Field(None, **image_bounds)
        mask_blur_x: int = Field(4, ge=0, le=64)
        mask_blur_y: int = Field(4, ge=0, le=64)
        mask_blur: Optional[int] = Field(None, ge=0, le=64)
        inpainting_fill: int = Field(0, ge=0, le=3)
        inpaint_full_res: bool = True
        inpaint_full_res_padding: int = Field(0, ge=0, le=256)
        inpainting_mask_invert: int = Field(0, ge=0, le=1)
        initial_noise_multiplier: Optional[float] = Field(None, ge=0.0, le=2.0)
        latent_mask: Optional[str] = Field(None, **image_bounds)
        include_init_images: bool = False

    return Txt2ImgRequest, Img2ImgRequest


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
