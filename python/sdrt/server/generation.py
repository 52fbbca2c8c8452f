"""From an A1111 txt2img / img2img request to a pipeline call in the worker thread, and from its
result to A1111's response ({images, parameters, info}).

Checks that need no model run here, in the request handler, before the job is queued: fields sdrt
does not implement are refused unless they hold their "off" value, names are resolved, seeds are
drawn (so `info` reports the seeds used), images are decoded under the limits."""
from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from ..pipelines import GenerationParams, JobHooks
from ..pipelines.params import ParamError, mode_defaults
from ..pipelines.rng import resolve_seed
from ..sampling import SAMPLERS, resolve_sampler
from .images import decode_image, encode_png
from .limits import Limits
from .models import MODEL_OPTIONS, ModelManager, OptionError
from .names import sampler_name, scheduler_label


class RequestError(ValueError):
    """A request sdrt cannot run as asked: answered 422 with `loc` naming the field."""

    def __init__(self, loc: tuple, message: str):
        super().__init__(message)
        self.loc = loc


# (field, its "off" values, what to say) for A1111 features sdrt does not implement
_UNSUPPORTED = [
    ("styles", (None, []), "prompt styles are not supported by sdrt; put the text in the prompt"),
    ("restore_faces", (None, False), "face restoration is not supported by sdrt"),
    ("tiling", (None, False), "tiling is not supported by sdrt"),
    ("disable_extra_networks", (False,), "disable_extra_networks is not supported; remove the <lora:...> tags"),
    ("s_min_uncond", (None, 0, 0.0), "s_min_uncond (negative guidance minimum sigma) is not supported by sdrt"),
    ("script_name", (None, ""), "scripts are not supported by sdrt"),
    ("save_images", (False,), "the server does not save images; set save_images to false and use the response"),
    ("infotext", (None, ""), "infotext as input is not supported; send the parameters as fields"),
    ("latent_mask", (None, ""), "latent_mask is not supported by sdrt"),
    ("initial_noise_multiplier", (None, 1, 1.0), "initial_noise_multiplier other than 1 is not supported by sdrt"),
]


@dataclass
class Prepared:
    """A validated request, ready for the worker."""
    kind: str
    request: Any
    params: GenerationParams
    model: dict = field(default_factory=dict)      # override_settings' sd_model_checkpoint / sd_vae
    restore: bool = True                           # override_settings_restore_afterwards
    option_overrides: dict = field(default_factory=dict)
    control_key: Optional[str] = None              # where the ControlNet units came (alwayson_scripts.<key>)


def prepare(kind: str, req, manager: ModelManager, limits: Limits) -> Prepared:
    """Everything about `req` that can be checked without the model (raises RequestError)."""
    _refuse_unsupported(req)
    for name in ("prompt", "negative_prompt"):
        check_prompt(getattr(req, name), name)
    # A1111 runs any size on latents of size // 8: the picture comes out floored to a multiple of 8
    width, height = req.width // 8 * 8, req.height // 8 * 8
    _check_pixel_budgets(req, width, height, limits)
    sampler, scheduler, info = _sampler(req)
    options, model, overrides = _overrides(req, manager)
    values = _generation_values(req, options, info)
    values.update(sampler_name=sampler, scheduler=scheduler, width=width, height=height,
                  seed=resolve_seed(req.seed), subseed=resolve_seed(req.subseed, "subseed"))
    values.update(_refiner_values(req, manager))
    if kind == "img2img":
        values.update(_img2img_values(req, limits))
    elif req.enable_hr:
        values.update(_hires_values(req, manager))
    else:  # A1111 ignores the hires fields then (clients send their defaults, or "string")
        values.update(mode_defaults("txt2img"))
    values["controlnet"], control_key = _controlnet_values(req, manager, limits, values)
    params = GenerationParams(**values)
    try:
        params.validate()
        if params.enable_hr:
            _check_hires_budget(params, manager, limits)
    except ParamError as e:
        raise RequestError(param_loc(e.field, control_key), param_message(e, control_key)) from None
    return Prepared(kind, req, params, model, req.override_settings_restore_afterwards, overrides, control_key)


def _controlnet_values(req, manager: ModelManager, limits: Limits, values: dict) -> tuple[list, Optional[str]]:
    """(ControlNet units, the alwayson_scripts key they came under) (sdrt.server.controlnet)."""
    from .controlnet import request_units, script_key

    side = max(values["width"], values["height"])
    if values.get("enable_hr"):  # the maps are fitted to the hires pass too
        scaled = max(int(side * values.get("hr_scale", 1.0)), values.get("hr_resize_x", 0), values.get("hr_resize_y", 0))
        side = min(max(side, scaled), limits.max_side)
    init_images = values.get("init_images") or [None]
    units = request_units(req, manager.folders, limits, side, init_images[0])
    return units, script_key(req.alwayson_scripts or {})


_UNIT_FIELD = re.compile(r"controlnet(?:\[(\d+)\])?((?:\.\w+)*)")


def param_loc(field: Optional[str], control_key: Optional[str] = None) -> tuple:
    """The 422 location of the field a ParamError names: "controlnet[i].x" (the units' checks) is
    field x of unit i in alwayson_scripts.<key>.args, where the request sent it."""
    match = _UNIT_FIELD.fullmatch(field or "")
    if match is None:
        return ("body", field) if field else ("body",)
    loc = ("body", "alwayson_scripts", control_key or "ControlNet", "args")
    if match[1] is None:
        return loc
    return loc + (int(match[1]), *[part for part in match[2].split(".") if part])


def param_message(error: ValueError, control_key: Optional[str] = None) -> str:
    """The error's message, a unit's "controlnet[i]" written as where the request sent it."""
    text = str(error)
    if text.startswith("controlnet[") or text.startswith("controlnet."):
        text = f"alwayson_scripts.{control_key or 'ControlNet'}.args" + text[len("controlnet"):]
    return text


def _hires_values(req, manager: ModelManager) -> dict:
    """The hires pass's sampler and schedule as labels, its checkpoint checked (A1111's
    "Use same checkpoint" and "" mean none)."""
    out = {}
    if req.hr_sampler_name:
        out["hr_sampler_name"] = _sampler_label(req.hr_sampler_name, "hr_sampler_name")
    if req.hr_scheduler:
        out["hr_scheduler"] = _scheduler_label(req.hr_scheduler, "hr_scheduler")
    out["hr_checkpoint_name"] = _checkpoint_title(req, "hr_checkpoint_name", manager, ("Use same checkpoint",))
    return out


def _refiner_values(req, manager: ModelManager) -> dict:
    """The refiner checkpoint resolved in the model folders (A1111: None, "", "None" and "none" mean
    none). Without refiner_switch_at A1111's API switches at the first model call."""
    out = {"refiner_checkpoint": _checkpoint_title(req, "refiner_checkpoint", manager, ("None", "none"))}
    if out["refiner_checkpoint"] is None or req.refiner_switch_at is not None:
        return out
    return {**out, "refiner_switch_at": 0.0}


def _checkpoint_title(req, field_name: str, manager: ModelManager, none_names: tuple) -> str | None:
    """The title of the checkpoint a request field names, resolved in the model folders; None
    for None, "" and the field's own names for none (a 422 naming the field when unknown)."""
    name = getattr(req, field_name)
    if name in (None, "", *none_names):
        return None
    try:
        return manager.resolve_checkpoint(name, field_name)[0]
    except OptionError as e:
        raise RequestError(("body", field_name), str(e)) from None


def _check_hires_budget(p: GenerationParams, manager: ModelManager, limits: Limits) -> None:
    """Every size the hires job makes under the server's limits (the first pass, the upscale before
    the cut, the result), and hr_upscaler known: before any sampling."""
    from ..pipelines.hires import plan_hires, size_field

    plan = plan_hires(p, manager.upscalers)
    first, second, field = plan.first, plan.second, size_field(p)
    (up_w, up_h), n = plan.upscale_to, p.batch_size
    if max(second.width, second.height) > limits.max_side:
        raise ParamError(field, f"{field}: the hires size {second.width}x{second.height} exceeds the server's limit of "
                                f"{limits.max_side} pixels a side")
    for what, pixels in (("first pass", first.width * first.height * n), ("upscaled", up_w * up_h * n)):
        if pixels > limits.max_batch_pixels:
            raise ParamError(field, f"{field}: the {what} images hold {pixels} pixels (x batch_size), more than the "
                                    f"limit of {limits.max_batch_pixels}")
    if second.width * second.height * n * p.n_iter > limits.max_output_pixels:
        raise ParamError("n_iter", f"hires width x height x batch_size x n_iter = "
                                   f"{second.width * second.height * n * p.n_iter} pixels exceeds the limit of "
                                   f"{limits.max_output_pixels}")


def _refuse_unsupported(req) -> None:
    for name, off, why in _UNSUPPORTED:
        if name not in _GENERATION_FIELDS and hasattr(req, name) and getattr(req, name) not in off:
            raise RequestError(("body", name), why)
    for seed_size in ("seed_resize_from_h", "seed_resize_from_w"):
        if getattr(req, seed_size) > 0:
            raise RequestError(("body", seed_size), "'resize seed from' is not supported by sdrt; use -1 or 0")
    from .controlnet import SCRIPT, other_scripts

    others = other_scripts(req.alwayson_scripts or {})
    if others:
        raise RequestError(("body", "alwayson_scripts", others[0]), f"always-on script {others[0]!r} is not available "
                                                                    f"in sdrt; available: {SCRIPT}")


def _check_pixel_budgets(req, width: int, height: int, limits: Limits) -> None:
    if width * height * req.batch_size > limits.max_batch_pixels:
        raise RequestError(("body", "batch_size"), f"width x height x batch_size = {width * height * req.batch_size} "
                                                   f"pixels exceeds the limit of {limits.max_batch_pixels}")
    if width * height * req.batch_size * req.n_iter > limits.max_output_pixels:
        raise RequestError(("body", "n_iter"), f"width x height x batch_size x n_iter = "
                                               f"{width * height * req.batch_size * req.n_iter} pixels exceeds the "
                                               f"limit of {limits.max_output_pixels}")


def _sampler(req):
    """(sampler label, schedule label, SamplerInfo) from A1111's names and aliases."""
    sampler = _sampler_label(req.sampler_name or req.sampler_index or "Euler",
                             "sampler_name" if req.sampler_name else "sampler_index")
    scheduler = _scheduler_label(req.scheduler, "scheduler") if req.scheduler else "Automatic"
    try:
        info, _ = resolve_sampler(sampler, scheduler)
    except ValueError as e:
        raise RequestError(("body", "sampler_name"), str(e)) from None
    return sampler, scheduler, info


def _sampler_label(name: str, field: str) -> str:
    """A1111's sampler label for a name or alias (refused naming `field`)."""
    label = sampler_name(name)
    if label is None:
        raise RequestError(("body", field), f"sampler {name!r} is unknown; valid: {', '.join(SAMPLERS)}")
    return label


def _scheduler_label(name: str, field: str) -> str:
    label = scheduler_label(name)
    if label is None:
        raise RequestError(("body", field), f"scheduler {name!r} is unknown")
    return label


def _overrides(req, manager: ModelManager) -> tuple[dict, dict, dict]:
    """(options in effect for the job, model to load, option overrides) from override_settings."""
    options = dict(manager.options)
    model, overrides = {}, {}
    if req.override_settings:
        try:
            overrides = manager.set_options(req.override_settings)
            options.update(overrides)
            for key in MODEL_OPTIONS:  # resolved now (refused if unknown), loaded by the worker
                value = req.override_settings.get(key)
                if value is not None:
                    (manager.resolve_checkpoint if key == "sd_model_checkpoint" else manager.resolve_vae)(value, key)
                    model[key] = value
        except OptionError as e:
            raise RequestError(("body", "override_settings", e.field), str(e)) from None
    return options, model, overrides


# GenerationParams fields whose server value comes from an A1111 option when the request leaves it unset
_FROM_OPTIONS = {"clip_skip": "CLIP_stop_at_last_layers", "s_churn": "s_churn", "s_tmin": "s_tmin",
                 "s_noise": "s_noise", "eta_noise_seed_delta": "eta_noise_seed_delta"}
_GENERATION_FIELDS = {f.name for f in dataclasses.fields(GenerationParams)}


def _generation_values(req, options: dict, info) -> dict:
    """The request's GenerationParams fields (same names as A1111's), unset ones from the options
    (`info`: the sampler, whose eta option applies)."""
    values = {name: getattr(req, name) for name in _GENERATION_FIELDS
              if getattr(req, name, None) is not None and name not in ("init_images", "mask")}
    for name, option in _FROM_OPTIONS.items():
        if values.get(name) is None:
            values[name] = options[option]
    if values.get("eta") is None and "eta" in info.options:
        values["eta"] = options["eta_ddim"] if info.name == "DDIM" else options["eta_ancestral"]
    values["s_tmax"] = values.get("s_tmax") or math.inf  # A1111: 0 / unset means no upper limit
    return values


def _img2img_values(req, limits: Limits) -> dict:
    """Decoded init images and mask (under the limits) and A1111's img2img field quirks."""
    images, total = [], 0
    for i, b64 in enumerate(req.init_images):
        image = decode_image(b64, ("body", "init_images", i), limits)
        total += image.width * image.height
        if total > limits.max_input_pixels:
            raise RequestError(("body", "init_images", i), f"the init images hold more than "
                                                           f"{limits.max_input_pixels} pixels together")
        images.append(image)
    mask = None
    if req.mask:
        mask = decode_image(req.mask, ("body", "mask"), limits)
        if mask.size != images[0].size:
            w, h = images[0].size
            raise RequestError(("body", "mask"), f"mask is {mask.size[0]}x{mask.size[1]}, "
                                                 f"the first init image {w}x{h}; they must match")
    if req.mask_blur is None and req.mask_blur_x != req.mask_blur_y:
        raise RequestError(("body", "mask_blur_x"), "different mask_blur_x and mask_blur_y are not supported; "
                                                    "set mask_blur")
    return dict(init_images=images, mask=mask, mask_blur=req.mask_blur if req.mask_blur is not None else req.mask_blur_x,
                denoising_strength=req.denoising_strength if req.denoising_strength is not None else 0.75,
                inpainting_mask_invert=bool(req.inpainting_mask_invert))


MAX_BRACKETS_PER_EDIT = 64  # ( and [ inside one [ ] group: its parse costs ~ the cube of this
MAX_AND = 32                # AND parts: each is one more UNet input per step


def check_prompt(text: str, field: str) -> None:
    """Refuse prompts whose prompt-editing parse or AND fan-out would stall the worker."""
    from ..prompt.scheduling import split_and, top_level_groups

    for group in top_level_groups(text):
        if "[" in group and group.count("[") + group.count("(") > MAX_BRACKETS_PER_EDIT:
            raise RequestError(("body", field), f"a [ ] group holds more than {MAX_BRACKETS_PER_EDIT} brackets")
    if len(split_and(text)) > MAX_AND:
        raise RequestError(("body", field), f"more than {MAX_AND} AND parts")


class ModelUnavailable(RuntimeError):
    """No model is loaded (the start-up load failed): answered 503."""


PREVIEW_EVERY = 5  # sampler steps between two previews at most (A1111 renders one every 10 by default)


def run(prepared: Prepared, job, manager: ModelManager) -> dict:
    """In the worker thread: load what the job needs, generate, answer in A1111's shape."""
    before = manager.loaded
    if before is None and not prepared.model.get("sd_model_checkpoint"):
        raise ModelUnavailable("no model is loaded (the start-up load failed; see the server log, or set "
                               "sd_model_checkpoint through /sdapi/v1/options)")
    loaded = before
    if prepared.model:
        loaded = manager.load(prepared.model.get("sd_model_checkpoint", before.checkpoint if before else None),
                              prepared.model.get("sd_vae", before.vae if before else "Automatic"))
    try:
        pipe = loaded.pipe
        last_preview = [-PREVIEW_EVERY]

        def on_step(info: dict) -> None:
            job.on_step(info)
            step = job.job_no * 10_000 + job.sampling_step
            if job.preview_wanted and manager.options.get("live_previews_enable", True) and \
                    step - last_preview[0] >= PREVIEW_EVERY:
                job.preview_wanted, last_preview[0] = False, step
                try:
                    job.current_image = encode_png(pipe.decode(info["denoised"][:1])[0], None)
                except Exception:  # a preview is a courtesy: the job goes on without it
                    job.current_image = None

        p = prepared.params
        hires = manager.load_hires(p.hr_checkpoint_name).pipe if p.enable_hr and p.hr_checkpoint_name else None
        refiner = manager.load_refiner(p.refiner_checkpoint).pipe \
            if p.refiner_checkpoint and p.refiner_switch_at < 1.0 else None
        hooks = JobHooks(callback=on_step, should_stop=job.should_stop, should_skip=job.should_skip,
                         hires_pipeline=hires, refiner_pipeline=refiner)
        return response(prepared, pipe.generate(prepared.params, hooks), loaded, job)
    finally:
        if prepared.restore:
            if prepared.model and before is not None:
                manager.loaded = before  # still in memory: no reload
        else:
            manager.options.update(prepared.option_overrides)


def response(prepared: Prepared, result, loaded, job) -> dict:
    req, p = prepared.request, prepared.params
    info_obj = loaded.pipe.info
    n = len(result.images)
    images = [encode_png(im, text) for im, text in zip(result.images, result.infotexts)] if req.send_images else []
    parameters = req.model_dump()
    if prepared.kind == "img2img" and not req.include_init_images:  # A1111 leaves them out of the echo
        parameters["init_images"], parameters["mask"] = None, None
    info = {
        "prompt": req.prompt, "all_prompts": result.prompts or [req.prompt] * n,
        "negative_prompt": req.negative_prompt, "all_negative_prompts": [req.negative_prompt] * n,
        "seed": p.seed, "all_seeds": result.seeds,
        "subseed": p.subseed, "all_subseeds": [p.subseed + i for i in range(n)],
        "subseed_strength": p.subseed_strength, "width": p.width, "height": p.height,
        "sampler_name": p.sampler_name, "cfg_scale": p.cfg_scale, "steps": p.steps,
        "batch_size": p.batch_size, "restore_faces": False, "face_restoration_model": None,
        "sd_model_name": loaded.checkpoint, "sd_model_hash": info_obj.hash,
        "sd_vae_name": info_obj.vae_name, "sd_vae_hash": info_obj.vae_hash,
        "seed_resize_from_w": -1, "seed_resize_from_h": -1,
        "denoising_strength": p.denoising_strength if p.is_img2img or p.enable_hr else None, "extra_generation_params": {},
        "index_of_first_image": 0, "infotexts": result.infotexts, "styles": [], "job_timestamp": job.timestamp,
        "clip_skip": p.clip_skip, "is_using_inpainting_conditioning": info_obj.image_cond_channels > 0,
        "interrupted": result.interrupted, "version": _version(),
    }
    return {"images": images, "parameters": parameters, "info": json.dumps(info)}


def _version() -> str:
    from .. import __version__

    return f"sdrt {__version__}"
