"""A1111's extras endpoints (POST /sdapi/v1/extra-single-image, extra-batch-images): request
shapes, checks before the job is queued, and the upscale run in the worker thread."""
from __future__ import annotations

import dataclasses
import html
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from ..pipelines.params import ParamError
from ..postprocess.extras import ExtrasParams, run_extras
from ..sampling.denoiser import Interrupted
from .generation import RequestError
from .images import decode_image, encode_png
from .limits import Limits

_A1111 = ConfigDict(extra="ignore", allow_inf_nan=False)
_PARAMS = [f.name for f in dataclasses.fields(ExtrasParams)]


class ExtrasBase(BaseModel):
    model_config = _A1111
    resize_mode: Literal[0, 1] = 0
    show_extras_results: bool = True
    gfpgan_visibility: float = Field(0, ge=0, le=1)
    codeformer_visibility: float = Field(0, ge=0, le=1)
    codeformer_weight: float = Field(0, ge=0, le=1)
    upscaling_resize: float = Field(2, ge=1, le=8)
    upscaling_resize_w: int = Field(512, ge=1)
    upscaling_resize_h: int = Field(512, ge=1)
    upscaling_crop: bool = True
    upscaler_1: Optional[str] = Field("None", max_length=200)
    upscaler_2: Optional[str] = Field("None", max_length=200)
    extras_upscaler_2_visibility: float = Field(0, ge=0, le=1)
    upscale_first: bool = False


class ExtrasSingleImageRequest(ExtrasBase):
    image: str = ""


class FileData(BaseModel):
    data: str
    name: str = Field("", max_length=1000)


class ExtrasBatchImagesRequest(ExtrasBase):
    imageList: list[FileData] = Field(..., min_length=1)


def prepare(req: ExtrasBase, images: list[str], manager, limits: Limits) -> tuple[ExtrasParams, list]:
    """(the upscale parameters, the decoded images); raises RequestError naming the field."""
    for name in ("gfpgan_visibility", "codeformer_visibility"):
        if getattr(req, name):
            raise RequestError(("body", name), "face restoration is not supported by sdrt; set it to 0")
    params = ExtrasParams(**{k: getattr(req, k) if getattr(req, k) is not None else "None" for k in _PARAMS})
    try:
        params.validate(manager.upscalers)
    except ParamError as e:
        raise RequestError(("body", e.field), str(e)) from None
    if len(images) > limits.max_init_images:
        raise RequestError(("body", "imageList"), f"{len(images)} images; at most {limits.max_init_images}")
    single = isinstance(req, ExtrasSingleImageRequest)
    decoded = []
    for i, b64 in enumerate(images):
        loc = ("body", "image") if single else ("body", "imageList", i, "data")
        image = decode_image(b64, loc, limits)
        w, h = params.upscaled_size(image.width, image.height)
        if w * h > limits.max_image_pixels:
            raise RequestError(loc, f"the image would be upscaled to {w}x{h}, more than the limit of "
                                    f"{limits.max_image_pixels} pixels")
        decoded.append(image)
    return params, decoded


def run(params: ExtrasParams, images: list, manager, job) -> tuple[list[str], str]:
    """In the worker thread: (base64 PNGs, A1111's html_info of the last image); stops between
    images when interrupted or cancelled."""
    out, text = [], ""
    job.job_count = len(images)
    for i, image in enumerate(images):  # A1111 keeps the source's text chunks and adds "postprocessing"
        if job.should_stop():
            raise Interrupted()
        job.job_no = i
        result, text = run_extras(image, params, manager.upscalers)
        kept = {k: v for k, v in image.info.items() if isinstance(k, str) and isinstance(v, str)}
        out.append(encode_png(result, None, {**kept, **({"postprocessing": text} if text else {})}))
    return out, f"<p>{html.escape(text)}</p>"
