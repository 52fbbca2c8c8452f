"""GenerationParams: one job's parameters with A1111's field names, shared by the Python API, the
CLI and the server, and validated in one place.

Each field's metadata says what every front end needs to know about it, so a feature adds a
field once: ``server`` (A1111's HTTP API default where it differs from the Python API's),
``bounds`` (inclusive range checked here and written into the server's request schema),
``cli`` (the command-line flags) and ``help``. docs/parameters.md has the table of defaults.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from PIL import Image

from .rng import MAX_SEED

MAX_PROMPT_CHARS = 65536  # ~870 chunks of 75 tokens: far past any useful prompt, refused before any work


class ParamError(ValueError):
    """A parameter the pipeline cannot run; `field` names it (the server answers 422 with it)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class ApiField:
    """How a field appears in A1111's HTTP API request (sdrt.server.schemas builds the request
    models from these): its type there, default, and bounds; `limit` names the server Limits
    attribute that caps it (its upper bound, or its length for strings and lists, and the default
    when that is lower)."""
    type: Any
    default: Any = None
    ge: Optional[float] = None
    le: Optional[float] = None
    limit: Optional[str] = None
    required: bool = False


def param(default: Any = None, *, server_note: str = "", api: Optional[ApiField] = None,
          bounds: tuple | None = None, cli: tuple = (), help: str = "", only: Optional[str] = None,
          factory: Callable | None = None):
    """A field with its metadata: `api` the A1111 HTTP API request field (None: not in A1111's
    request), `server_note` where the server takes the value from instead (an option, a tag),
    `only` the one mode ("txt2img" / "img2img") that takes it (None: both)."""
    meta = {"server_note": server_note, "api": api, "bounds": bounds, "cli": cli, "help": help, "only": only}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class GenerationParams:
    prompt: str | Sequence[str] = param("", api=ApiField(str, "", limit="max_prompt_chars"), help="the prompt (A1111 syntax), or one per image")
    negative_prompt: str | Sequence[str] = param("", api=ApiField(str, "", limit="max_prompt_chars"),
                                                 cli=("-n", "--negative-prompt"))
    steps: int = param(20, api=ApiField(int, 50, 1, limit="max_steps"), bounds=(1, None), cli=("--steps",))
    sampler_name: str = param("Euler a", server_note="'Euler' (sampler_index)", api=ApiField(Optional[str], None, le=100), cli=("--sampler",),
                              help="A1111 sampler name, e.g. 'Euler a', 'DPM++ 2M'")
    scheduler: str = param("Automatic", api=ApiField(Optional[str], None, le=100), cli=("--scheduler",), help="A1111 schedule type, e.g. 'Karras'")
    cfg_scale: float = param(7.0, api=ApiField(float, 7.0, 0.0, 100.0), bounds=(None, None), cli=("--cfg-scale",))
    width: Optional[int] = param(None, api=ApiField(int, 512, 64, limit="max_side"), bounds=(8, None), cli=("--width",),
                                 help="pixels, a multiple of 8 (default: the model's native size)")
    height: Optional[int] = param(None, api=ApiField(int, 512, 64, limit="max_side"), bounds=(8, None), cli=("--height",))
    seed: int = param(-1, api=ApiField(int, -1, -1, MAX_SEED), cli=("--seed",), help="-1: random")
    subseed: int = param(-1, api=ApiField(int, -1, -1, MAX_SEED), cli=("--subseed",), help="variation seed")
    subseed_strength: float = param(0.0, api=ApiField(float, 0.0, 0.0, 1.0), bounds=(0.0, 1.0), cli=("--subseed-strength",), help="variation strength")
    batch_size: int = param(1, api=ApiField(int, 1, 1, limit="max_batch_size"), bounds=(1, None), cli=("--batch-size",))
    n_iter: int = param(1, api=ApiField(int, 1, 1, limit="max_n_iter"), bounds=(1, None), cli=("--n-iter",))
    clip_skip: int = param(1, server_note="option CLIP_stop_at_last_layers", bounds=(1, None), cli=("--clip-skip",))
    eta: Optional[float] = param(None, api=ApiField(Optional[float], None, 0.0, 1.0), server_note="options eta_ancestral / eta_ddim", bounds=(None, None),
                                 cli=("--eta",), help="default: the sampler's own (1 ancestral/SDE, 0 DDIM)")
    s_churn: float = param(0.0, api=ApiField(Optional[float], None, 0.0, 100.0), server_note="option s_churn", bounds=(None, None), cli=("--s-churn",))
    s_tmin: float = param(0.0, api=ApiField(Optional[float], None, 0.0, 1e4), server_note="option s_tmin", bounds=(None, None), cli=("--s-tmin",))
    s_tmax: float = param(math.inf, api=ApiField(Optional[float], None, 0.0, 1e4), server_note="0 or unset means inf", cli=("--s-tmax",))
    s_noise: float = param(1.0, api=ApiField(Optional[float], None, 0.0, 2.0), server_note="option s_noise", bounds=(None, None), cli=("--s-noise",))
    eta_noise_seed_delta: int = param(0, server_note="option eta_noise_seed_delta", cli=("--ensd",),
                                      help="A1111's ENSD (31337 reproduces NovelAI-style seeds)")
    loras: Optional[Sequence] = param(None, server_note="<lora:...> tags in the prompt only",
                                      help="[(name_or_path, weight) | (name_or_path, te_weight, unet_weight)]")
    denoising_strength: float = param(0.75, api=ApiField(Optional[float], 0.75, 0.0, 1.0), bounds=(0.0, 1.0),
                                      cli=("--denoising-strength",), help="img2img, and the hires pass (with --hr-*)")
    # SDXL refiner (both modes; sdrt.pipelines.refiner)
    refiner_checkpoint: Optional[str] = param(None, api=ApiField(Optional[str], None, le=1000), cli=("--refiner",),
                                              help="a model (an SDXL refiner) that continues the sampling")
    refiner_switch_at: float = param(0.8, api=ApiField(Optional[float], None, 0.0, 1.0), bounds=(0.0, 1.0),
                                     server_note="unset: the refiner from the first call (A1111)",
                                     cli=("--refiner-switch-at",),
                                     help="share of the schedule (by timestep) after which the refiner runs")
    # ControlNet (both modes; sdrt.control): units with the sd-webui-controlnet extension's fields
    controlnet: Sequence = param(factory=list, server_note="alwayson_scripts.ControlNet.args",
                                 help="ControlNet units: dicts with the ControlNet extension's fields")
    # hires fix (txt2img): sample, upscale, sample again (A1111's names; sdrt.pipelines.hires)
    enable_hr: bool = param(False, api=ApiField(bool, False), only="txt2img", cli=("--enable-hr",),
                            help="hires fix (any --hr-* option turns it on)")
    hr_scale: float = param(2.0, api=ApiField(float, 2.0, 1.0, 8.0), bounds=(1.0, 8.0), only="txt2img",
                            cli=("--hr-scale",), help="used when hr_resize_x and hr_resize_y are 0")
    hr_upscaler: Optional[str] = param(None, api=ApiField(Optional[str], None, le=200), only="txt2img", cli=("--hr-upscaler",),
                                       help="a latent mode or an upscaler name (default 'Latent')")
    hr_second_pass_steps: int = param(0, api=ApiField(int, 0, 0, limit="max_steps"), bounds=(0, None), only="txt2img",
                                      cli=("--hr-steps",), help="0: the first pass's steps")
    hr_resize_x: int = param(0, api=ApiField(int, 0, 0, limit="max_side"), bounds=(0, None), only="txt2img", cli=("--hr-resize-x",))
    hr_resize_y: int = param(0, api=ApiField(int, 0, 0, limit="max_side"), bounds=(0, None), only="txt2img", cli=("--hr-resize-y",))
    hr_sampler_name: Optional[str] = param(None, api=ApiField(Optional[str], None, le=100), only="txt2img",
                                           cli=("--hr-sampler",), help="default: the first pass's sampler")
    hr_scheduler: Optional[str] = param(None, api=ApiField(Optional[str], None, le=100), only="txt2img",
                                        cli=("--hr-scheduler",), help="default: the first pass's schedule type")
    hr_prompt: str | Sequence[str] = param("", api=ApiField(str, "", limit="max_prompt_chars"), only="txt2img",
                                           cli=("--hr-prompt",), help="default: the prompt")
    hr_negative_prompt: str | Sequence[str] = param("", api=ApiField(str, "", limit="max_prompt_chars"), only="txt2img",
                                                    cli=("--hr-negative-prompt",), help="default: the negative prompt")
    hr_checkpoint_name: Optional[str] = param(None, api=ApiField(Optional[str], None, le=1000), only="txt2img",
                                              cli=("--hr-checkpoint",),
                                              help="a second model for the hires pass (a checkpoint name or path)")
    firstphase_width: int = param(0, api=ApiField(int, 0, 0, limit="max_side"), bounds=(0, None), only="txt2img",
                                  help="legacy: the first pass's width (0: width)")
    firstphase_height: int = param(0, api=ApiField(int, 0, 0, limit="max_side"), bounds=(0, None), only="txt2img",
                                   help="legacy: the first pass's height (0: height)")
    # img2img and inpainting
    init_images: Sequence[Image.Image] = param(factory=list, only="img2img",
                                               api=ApiField(list[str], ge=1, limit="max_init_images", required=True), server_note="base64 images")
    resize_mode: int = param(0, api=ApiField(int, 0, 0, 2), bounds=(0, 2), only="img2img", cli=("--resize-mode",),
                             help="0 just resize, 1 crop and resize, 2 resize and fill")
    mask: Optional[Image.Image] = param(None, only="img2img", api=ApiField(Optional[str], None, limit="max_image_b64_chars"), server_note="a base64 image",
                                    help="inpainting mask image (white = repaint)")
    mask_blur: float = param(4, api=ApiField(Optional[int], None, 0, 64), server_note="mask_blur, else mask_blur_x (4)",
                            bounds=(0, 64), only="img2img", cli=("--mask-blur",))
    inpainting_fill: int = param(1, api=ApiField(int, 0, 0, 3), bounds=(0, 3), only="img2img", cli=("--inpainting-fill",),
                                 help="0 fill, 1 original, 2 latent noise, 3 latent nothing")
    inpainting_mask_invert: bool = param(False, only="img2img", api=ApiField(int, 0, 0, 1), cli=("--invert-mask",))
    inpaint_full_res: bool = param(False, only="img2img", api=ApiField(bool, True), cli=("--only-masked",),
                                   help="inpaint only the masked area, at full resolution")
    inpaint_full_res_padding: int = param(32, api=ApiField(int, 0, 0, 256), bounds=(0, 256), only="img2img",
                                          cli=("--only-masked-padding",), help="pixels around the mask's box")

    def __post_init__(self):
        if isinstance(self.init_images, Image.Image):
            self.init_images = [self.init_images]

    @property
    def is_img2img(self) -> bool:
        return bool(self.init_images)

    @property
    def mode(self) -> str:
        return "img2img" if self.is_img2img else "txt2img"

    def sized(self, default_size: int) -> "GenerationParams":
        """A copy with width/height filled in from the model's native size."""
        return dataclasses.replace(self, width=default_size if self.width is None else int(self.width),
                                   height=default_size if self.height is None else int(self.height))

    def validate(self) -> None:
        """Raise ValueError naming the field ("name=value; ...") for anything the pipeline cannot
        run. Sampler and schedule names are checked where they are resolved (prepare)."""
        for name in ("width", "height", "firstphase_width", "firstphase_height"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0 or value % 8 or
                                      (value == 0 and not name.startswith("first"))):
                raise ParamError(name, f"{name}={value}; must be a positive multiple of 8")
        for f in dataclasses.fields(self):
            value, bounds = getattr(self, f.name), f.metadata["bounds"]
            if bounds is not None and value is not None:
                _check_bounds(f.name, value, bounds, f.metadata["help"])
        per_image(self.prompt, self.batch_size, "prompt")
        per_image(self.negative_prompt, self.batch_size, "negative_prompt")
        self._validate_images()
        self._validate_mode()
        if self.controlnet:
            from ..control.units import parse_units

            parse_units(self.controlnet)
        if self.enable_hr:
            self._validate_hires()

    def _validate_mode(self) -> None:
        """A field of the other mode must keep its default (enable_hr with init images, ...)."""
        for f in dataclasses.fields(self):
            only = f.metadata["only"]
            if only is None or only == self.mode or f.name == "init_images":
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if getattr(self, f.name) != default:
                raise ParamError(f.name, f"{f.name}={_short(getattr(self, f.name))}; {_a(only)} {only} parameter, and this "
                                         f"is {self.mode}")

    def _validate_hires(self) -> None:
        if self.denoising_strength is None or not self.denoising_strength:
            raise ParamError("denoising_strength", "denoising_strength=0 with enable_hr: the hires pass would run no "
                                                   "step; use extras (sdrt upscale) to only upscale")
        for name in ("hr_prompt", "hr_negative_prompt"):
            if getattr(self, name) != "":
                per_image(getattr(self, name), self.batch_size, name)

    def _validate_images(self) -> None:
        images = self.init_images
        if not isinstance(images, (list, tuple)) or not all(isinstance(im, Image.Image) for im in images):
            raise ParamError("init_images", "init_images: expected a PIL image or a non-empty list of PIL images")
        if self.mask is None:
            return
        if not isinstance(self.mask, Image.Image):
            raise ParamError("mask", "mask: expected a PIL image (white = repaint)")
        if not images:
            raise ParamError("mask", "mask: given without init_images; inpainting needs the image to paint into")
        if self.mask.size != images[0].size:
            raise ParamError("mask", f"mask: size {self.mask.size[0]}x{self.mask.size[1]} does not match the init image's "
                             f"{images[0].size[0]}x{images[0].size[1]}")


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _check_bounds(name: str, value, bounds: tuple, meaning: str = "") -> None:
    lo, hi = bounds
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ParamError(name, f"{name}={value!r}; must be a number") from None
    if not math.isfinite(number):
        raise ParamError(name, f"{name}={value}; must be a finite number")
    if lo is not None and hi is not None and not lo <= number <= hi:
        raise ParamError(name, f"{name}={value}; must be in [{lo:g}, {hi:g}]" + (f" ({meaning})" if meaning else ""))
    if lo is not None and number < lo:
        raise ParamError(name, f"{name}={value}; must be >= {lo:g}")


def per_image(value: str | Sequence[str], batch_size: int, name: str) -> list[str]:
    """One string per image of a batch: a string for all, or a list of batch_size strings."""
    values = [value] * int(batch_size) if isinstance(value, str) else list(value)
    if len(values) != batch_size or not all(isinstance(v, str) for v in values):
        raise ParamError(name, f"{name}: expected a string or a list of {batch_size} strings (one per image)")
    for v in values:
        if len(v) > MAX_PROMPT_CHARS:
            raise ParamError(name, f"{name}: {len(v)} characters; at most {MAX_PROMPT_CHARS}")
    return values


def mode_defaults(mode: str) -> dict[str, Any]:
    """The defaults of the fields only `mode` takes (the hires fields for "txt2img"): what a job
    that does not use them holds."""
    return {f.name: f.default for f in dataclasses.fields(GenerationParams) if f.metadata["only"] == mode
            and f.default is not dataclasses.MISSING}


def server_defaults() -> dict[str, Any]:
    """Fields whose A1111 HTTP API default value differs from the Python API's."""
    out = {}
    for f in dataclasses.fields(GenerationParams):
        api = f.metadata["api"]
        if api is not None and api.default is not None and not f.metadata["server_note"] and api.default != f.default:
            out[f.name] = api.default
    return out


def defaults_table() -> str:
    """The Markdown table of docs/parameters.md: every field with its Python API / CLI default and
    the server's, from the field metadata (a test keeps the page equal to this)."""
    rows = ["| field | Python API and CLI | CLI flag | `sdrt serve` (A1111 API) |", "|---|---|---|---|"]
    for f in dataclasses.fields(GenerationParams):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        meta = f.metadata
        server = meta["server_note"] or repr(server_defaults().get(f.name, default)) if meta["api"] else "not in the API"
        server = meta["server_note"] or server
        python = "model's native size" if f.name in ("width", "height") else repr(default)
        flag = ", ".join(f"`{c}`" for c in meta["cli"]) or ("positional" if f.name == "prompt" else "")
        if f.name == "init_images":
            flag = "positional `init_image`"
        elif f.name == "mask":
            flag = "`--mask` (a file)"
        mode = f" ({meta['only']})" if meta["only"] else ""
        rows.append(f"| `{f.name}`{mode} | {python} | {flag} | {server} |")
    return "\n".join(rows) + "\n"
