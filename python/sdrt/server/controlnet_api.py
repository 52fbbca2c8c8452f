"""What the extension's /controlnet/* routes answer: the module list with its sliders, the control
types (facts section 7 of docs/dev/controlnet-extension-facts.md) and /controlnet/detect, which
runs one preprocessor on each image: checked and decoded in the request's thread, run by the
generation worker (model-based preprocessors share the device with generation)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from PIL import Image
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from ..control.detect import detect_with_pose
from ..control.image_resize import hwc3
from ..control.preprocessors import Preprocessor, control_tags, find_preprocessor, sorted_preprocessors
from ..loaders.model_folders import ModelFolders
from .controlnet import API_VERSION, UNIT_COUNT, check_map_size, where
from .generation import RequestError
from .images import decode_image, encode_png
from .limits import Limits

_A1111 = ConfigDict(extra="ignore", allow_inf_nan=False)
_LIMITS = Limits()
# extra model-name filters of a control type (the extension's tag_to_filters), by lowercased tag
TAG_FILTERS = {"instructp2p": ("ip2p",), "segmentation": ("seg",), "normalmap": ("normal",),
               "t2i-adapter": ("t2i_adapter", "t2iadapter", "t2ia"), "ip-adapter": ("ip_adapter", "ipadapter"),
               "openpose": ("openpose", "densepose"), "instant-id": ("instant_id", "instantid"),
               "scribble": ("sketch",), "tile": ("blur",)}


def module_list(alias_names: bool) -> dict:
    """{"module_list": names (labels with alias_names), "module_detail": {each: model_free, sliders}}."""
    keys = [(p.label if alias_names else p.name, p) for p in sorted_preprocessors()]
    return {"module_list": [key for key, _ in keys],
            "module_detail": {key: {"model_free": False, "sliders": [s.as_json() for s in p.sliders()]}
                              for key, p in keys}}


def control_types(models: list[str]) -> dict:
    """{"control_types": {"All", then each tag sorted: module_list, model_list, default_option,
    default_model}}; `models` is the model_list (without "None")."""
    labels = [p.label for p in sorted_preprocessors()]
    types = {"All": {"module_list": labels, "model_list": ["None", *models], "default_option": "none",
                     "default_model": "None"}}
    for tag in control_tags():
        types[tag] = control_type(tag, models)
    return {"control_types": types}


def control_type(tag: str, models: list[str]) -> dict:
    """One control type: "none" and the modules with the tag (labels, in the API's order), "None"
    and the models whose name holds the tag or one of its filters."""
    modules = [p.label for p in sorted_preprocessors() if tag in p.tags or p.label == "none"]
    filters = (tag.lower(), *TAG_FILTERS.get(tag.lower(), ()))
    matching = ["None"] + [m for m in models if any(f in m.lower() for f in filters)]
    default_model = "None"
    if len(matching) > 1:
        default_model = next((m for m in matching if "11" in m.split("[")[0]), matching[1])
    return {"module_list": modules, "model_list": matching,
            "default_option": modules[1] if len(modules) > 1 else modules[0], "default_model": default_model}


class DetectRequest(BaseModel):
    """The extension's /controlnet/detect body (its defaults); `controlnet_images` (what the
    webuiapi client sends) is read as controlnet_input_images."""
    model_config = _A1111
    controlnet_module: str = Field("none", max_length=200)
    controlnet_input_images: list[str] = Field(
        default_factory=list, max_length=_LIMITS.max_init_images,
        validation_alias=AliasChoices("controlnet_input_images", "controlnet_images"))
    controlnet_processor_res: int = -1
    controlnet_threshold_a: float = -1
    controlnet_threshold_b: float = -1
    controlnet_masks: list[str] = Field(default_factory=list, max_length=_LIMITS.max_init_images)
    low_vram: bool = False


class DetectError(ValueError):
    """A detect request the extension refuses: 422 with its `detail` text."""


@dataclass(frozen=True)
class DetectJob:
    """A checked detect request: its module and decoded images (with their masks)."""
    module: str
    images: list  # (H, W, 3) uint8 RGB
    masks: list   # (H, W) uint8 or None, per image
    settings: tuple  # (processor_res, threshold_a, threshold_b) as sent


def prepare_detect(req: DetectRequest, limits: Limits) -> DetectJob:
    """The request checked and its images decoded under the limits (raises DetectError with the
    extension's messages, RequestError / ImageInputError naming a field)."""
    preprocessor = _checked(req, limits)
    resolution = preprocessor.settings(req.controlnet_processor_res, -1, -1)[0] if preprocessor.uses_resolution else 0
    images, masks, total = [], [], 0
    for i, data in enumerate(req.controlnet_input_images):
        loc = ("body", "controlnet_input_images", i)
        image = decode_image(data, loc, limits)
        total += image.width * image.height
        if total > limits.max_input_pixels:
            raise RequestError(loc, f"{where(loc)}: the images hold more than {limits.max_input_pixels} pixels "
                                    f"together")
        check_map_size(image.size, resolution, loc, limits)
        images.append(_rgb(image))
        masks.append(_mask(req, i, images[-1].shape[:2], preprocessor, limits))
    return DetectJob(req.controlnet_module, images, masks,
                     (req.controlnet_processor_res, req.controlnet_threshold_a, req.controlnet_threshold_b))


def run_detect(job: DetectJob, folders: Optional[ModelFolders]) -> dict:
    """In the worker thread (model-based preprocessors share the device): the extension's answer,
    {"info", "images": base64 PNGs[, "poses": the OpenPose modules' pose JSON per image]}; a
    preprocessor's missing weight file is a DetectError naming it."""
    images, poses = [], []
    for image, mask in zip(job.images, job.masks):
        try:
            control_map, pose = detect_with_pose(job.module, image, *job.settings, mask=mask, seed=0, folders=folders)
        except (FileNotFoundError, ValueError) as e:  # a weight file missing, an image the module cannot take
            raise DetectError(str(e)) from None
        images.append(encode_png(Image.fromarray(_display(control_map)), None))
        poses += [pose] if pose is not None else []
    return {"info": "Success", "images": images, **({"poses": poses} if poses else {})}


def _checked(req: DetectRequest, limits: Limits) -> Preprocessor:
    """The module, after the extension's checks in its order."""
    try:
        preprocessor = find_preprocessor(req.controlnet_module)
    except KeyError:
        raise DetectError("Module not available") from None
    if not req.controlnet_input_images:
        raise DetectError("No image selected")
    if preprocessor.needs_mask and len(req.controlnet_masks) != len(req.controlnet_input_images):
        raise DetectError(f"Preprocessor {req.controlnet_module} requires `controlnet_masks` param.")
    for name in ("controlnet_input_images", "controlnet_masks"):
        if len(getattr(req, name)) > limits.max_init_images:
            raise RequestError(("body", name), f"{name}: {len(getattr(req, name))} images; at most "
                                               f"{limits.max_init_images}")
    return preprocessor


def _rgb(image: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8: grey repeated, transparency composited onto white (the extension's HWC3)."""
    has_alpha = image.mode in ("RGBA", "LA", "PA", "P") and (image.mode != "P" or "transparency" in image.info)
    return hwc3(np.asarray(image.convert("RGBA" if has_alpha else "RGB")))


def _mask(req: DetectRequest, i: int, shape: tuple, preprocessor: Preprocessor, limits: Limits) -> Optional[np.ndarray]:
    """Mask i's first channel for modules that take a mask (the others ignore masks, as the
    extension does)."""
    if not preprocessor.needs_mask or i >= len(req.controlnet_masks):
        return None
    loc = ("body", "controlnet_masks", i)
    mask = np.asarray(decode_image(req.controlnet_masks[i], loc, limits).convert("RGB"))[..., 0]
    if mask.shape != shape:
        raise RequestError(loc, f"{where(loc)}: {mask.shape[1]}x{mask.shape[0]}, its image {shape[1]}x{shape[0]}; "
                                f"they must match")
    return mask


def _display(control_map: np.ndarray) -> np.ndarray:
    """What the extension shows of a map: an inpaint map (RGBA, alpha the mask) with the masked
    part half transparent."""
    if control_map.ndim == 3 and control_map.shape[2] == 4:
        out = control_map.copy()
        out[..., 3] = 255 - control_map[..., 3] // 2
        return out
    return control_map


def settings() -> dict:
    return {"control_net_unit_count": UNIT_COUNT}


def version() -> dict:
    return {"version": API_VERSION}
