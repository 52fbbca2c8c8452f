"""The sd-webui-controlnet extension's side of the API: units sent as
`alwayson_scripts: {"ControlNet": {"args": [unit, ...]}}` with txt2img / img2img, checked here
before the job is queued (images decoded under the server's limits, model names resolved only
inside the model folders), and its model_list (the other /controlnet/* answers:
sdrt.server.controlnet_api; facts in docs/dev/controlnet-extension-facts.md sections 5 and 7).

The units themselves are checked by sdrt.control.units (the pipeline's parse); the server only
turns base64 into images, names into files of its own folders, and refuses what its limits do not
allow, so the pipeline never reads a path a client chose."""
from __future__ import annotations

import os
from typing import Any, Optional

from PIL import Image

from ..control.models import SHIPPED_CONTROLNETS, list_controlnets, shipped_controlnet_path
from ..control.units import NO_MODEL
from ..control.preprocessors import find_preprocessor
from ..loaders.model_folders import ModelFolders, UnsafeModelNameError, without_hash_suffix
from .generation import RequestError
from .images import decode_image
from .limits import Limits

SCRIPT = "ControlNet"
API_VERSION = 3
UNIT_COUNT = 3  # the extension's control_net_unit_count default
_IMAGE_KEYS, _MASK_KEYS = ("image", "input_image"), ("mask", "mask_image")


def script_key(alwayson_scripts: dict) -> Optional[str]:
    """The key under which the request sends ControlNet's args (the extension matches the script
    name case-insensitively): "ControlNet", "controlnet", ... or None."""
    return next((k for k in alwayson_scripts if isinstance(k, str) and k.lower() == SCRIPT.lower()), None)


def other_scripts(alwayson_scripts: dict) -> list[str]:
    """The always-on scripts of a request that sdrt does not have."""
    return [k for k in alwayson_scripts if k != script_key(alwayson_scripts)]


def request_units(req, folders: Optional[ModelFolders], limits: Limits, side: int,
                  init_image: Optional[Image.Image] = None) -> list[dict]:
    """The units of `req` for GenerationParams(controlnet=...): copies of the client's dicts with
    their images decoded (PIL) and their models resolved in `folders` (a path, or a shipped name).
    `side`: the generation's longest side (the hires pass's too); `init_image`: img2img's first,
    what a unit without an image uses. Raises RequestError naming the field."""
    key = script_key(req.alwayson_scripts or {})
    if key is None:
        return []
    loc = ("body", "alwayson_scripts", key)
    script = req.alwayson_scripts[key]
    args = script.get("args") if isinstance(script, dict) else None
    if not isinstance(script, dict) or not isinstance(args, list):
        raise RequestError(loc + ("args",), f"{where(loc + ('args',))}={_short(args)}; expected a list of units "
                                            f"(dicts with the ControlNet extension's fields)")
    if len(args) > limits.max_controlnet_units:
        raise RequestError(loc + ("args",), f"{where(loc + ('args',))}: {len(args)} units; at most "
                                            f"{limits.max_controlnet_units}")
    budget = [limits.max_input_pixels]
    units = []
    for i, unit in enumerate(args):
        if not isinstance(unit, dict):
            raise RequestError(loc + ("args", i), f"{where(loc + ('args', i))}={_short(unit)}; expected a dict of "
                                                  f"unit fields")
        units.append(_unit(unit, loc + ("args", i), folders, limits, budget))
        _check_runs(units[-1], loc + ("args", i), init_image, side, limits)
    return units


def _unit(unit: dict, loc: tuple, folders: Optional[ModelFolders], limits: Limits, budget: list) -> dict:
    """One unit with decoded images and its model resolved (for enabled units: a disabled one is
    never loaded, as the extension never looks at its model)."""
    out = dict(unit)
    for key in _IMAGE_KEYS:
        if key in out:
            out[key] = _image_field(out[key], loc + (key,), limits, budget)
    for key in _MASK_KEYS:
        if key in out:
            out[key] = _decoded(out[key], loc + (key,), limits, budget)
    model = out.get("model")
    if enabled(out) and isinstance(model, str) and model not in NO_MODEL:
        out["model"] = resolve_model(model, folders, loc + ("model",))
    return out


def enabled(unit: dict) -> bool:
    """Whether a unit dict is enabled, as the unit checks read it (true, 1 or 1.0; sdrt's units
    default to enabled): every unit the pipeline may run has its model resolved here."""
    value = unit.get("enabled", True)
    return isinstance(value, (bool, int, float)) and value == 1


def _image_field(value: Any, loc: tuple, limits: Limits, budget: list) -> Any:
    """A unit's image field: base64, {"image", "mask"} or [image, mask], decoded; "" (webuiapi's
    "no image") is none."""
    if isinstance(value, dict):
        return {k: _decoded(v, loc + (k,), limits, budget) if k in ("image", "mask") else v for k, v in value.items()}
    if isinstance(value, list) and len(value) == 2:
        return [_decoded(v, loc + (j,), limits, budget) for j, v in enumerate(value)]
    return _decoded(value, loc, limits, budget)


def _decoded(value: Any, loc: tuple, limits: Limits, budget: list) -> Any:
    """A base64 string as a PIL image under the limits (all a request's unit images together
    under max_input_pixels); other values are left for the unit checks."""
    if not isinstance(value, str):
        return value
    if not value:
        return None
    image = decode_image(value, loc, limits)
    budget[0] -= image.width * image.height
    if budget[0] < 0:
        raise RequestError(loc, f"{where(loc)}: the ControlNet images hold more than {limits.max_input_pixels} "
                                f"pixels together")
    return image


def _check_runs(unit: dict, loc: tuple, init_image: Optional[Image.Image], side: int, limits: Limits) -> None:
    """A unit that runs has an image (txt2img has no init image to fall back on), and its control
    maps (the preprocessor's, and the map fitted to the generation) stay under the pixel limit."""
    model = unit.get("model")
    if not enabled(unit) or not isinstance(model, str) or model in NO_MODEL or unit.get("weight", 1) == 0:
        return
    image = _unit_image(unit)
    image = init_image if image is None else image
    if image is None:
        raise RequestError(loc + ("image",), f"{where(loc)}.image: none given; a txt2img unit needs a control image")
    if isinstance(image, Image.Image):
        check_map_size(image.size, max(_resolution(unit), side), loc + ("image",), limits)


def _unit_image(unit: dict) -> Any:
    value = next((unit[k] for k in _IMAGE_KEYS if unit.get(k) is not None), None)
    if isinstance(value, dict):
        return value.get("image")
    if isinstance(value, list) and value:
        return value[0]
    return value


def _resolution(unit: dict) -> int:
    """The preprocessor resolution a unit asks for (its default for -1), 0 for modules that keep
    the image's size or are unknown (refused by the unit checks)."""
    try:
        preprocessor = find_preprocessor(unit.get("module") or "none")
        res = unit.get("processor_res", -1)
        res = res if isinstance(res, (int, float)) and not isinstance(res, bool) else -1
        return preprocessor.settings(res, -1, -1)[0] if preprocessor.uses_resolution else 0
    except (KeyError, TypeError):
        return 0


def check_map_size(image_size: tuple[int, int], side: int, loc: tuple, limits: Limits) -> None:
    """Refuse an image whose control map would exceed max_image_pixels: scaling the short side to
    `side` (the preprocessor resolution, or the generation's size when fitting) gives
    side^2 * long / short pixels."""
    width, height = image_size
    short, long = min(width, height), max(width, height)
    if side and side * side * long > limits.max_image_pixels * short:
        raise RequestError(loc, f"{where(loc)}: {width}x{height}; its control map at {side} pixels on the short side "
                                f"would exceed {limits.max_image_pixels} pixels; send a less elongated image")


def resolve_model(name: str, folders: Optional[ModelFolders], loc: tuple) -> str:
    """A unit's model as the pipeline loads it: a shipped toy name, else the path of a file or
    diffusers folder inside models/ControlNet (the extension's matching: exact title, bare name,
    then the shortest name containing it). Never a path outside the folder."""
    bare = without_hash_suffix(name.strip())
    if bare in SHIPPED_CONTROLNETS:
        if not os.path.isfile(os.path.join(shipped_controlnet_path(bare), "config.json")):
            raise RequestError(loc, f"{where(loc)}={name!r}: the shipped weights are not installed with this sdrt")
        return bare
    if folders is None:
        raise RequestError(loc, f"{where(loc)}={name!r}: unknown; the server has no --models-dir, so only "
                                f"{', '.join(SHIPPED_CONTROLNETS)} are available")
    candidates = _folder_models(folders)
    try:
        path = folders.resolve("controlnet", name)
        if path in candidates.values():
            return path
    except UnsafeModelNameError as e:
        raise RequestError(loc, f"{where(loc)}={name!r}: {e}") from None
    except ValueError:
        pass
    wanted = bare.lower()
    found = candidates.get(wanted)
    if found is None and wanted:  # as the extension does: the shortest name containing it
        found = next((candidates[k] for k in sorted(candidates, key=len) if wanted in k), None)
    if found is None:
        valid = ", ".join(model_list(folders)) or "none"
        raise RequestError(loc, f"{where(loc)}={name!r}: not found in {folders.folder('controlnet')}; valid: {valid}")
    return found


def _folder_models(folders: ModelFolders) -> dict[str, str]:
    """{lowercased name: path} of models/ControlNet: single files by stem (weights inside
    diffusers folders excluded), diffusers folders by folder name."""
    root = folders.folder("controlnet")
    if not os.path.isdir(root):
        return {}
    real_root = os.path.realpath(root) + os.sep
    dirs = {d: os.path.join(root, d) for d in sorted(os.listdir(root))
            if os.path.isfile(os.path.join(root, d, "config.json"))
            and os.path.realpath(os.path.join(root, d)).startswith(real_root)}
    inside = tuple(p + os.sep for p in dirs.values())
    files = {os.path.splitext(os.path.basename(e.path))[0].lower(): e.path
             for e in reversed(folders.list("controlnet")) if not e.path.startswith(inside)}
    return {**files, **{d.lower(): p for d, p in dirs.items()}}


# --- the /controlnet/* listings ------------------------------------------------------------------

def model_list(folders: Optional[ModelFolders]) -> list[str]:
    """The extension's model_list (no "None"): the shipped toy ControlNets, then models/ControlNet."""
    return list_controlnets(folders) if folders is not None else list(SHIPPED_CONTROLNETS)


def where(loc: tuple) -> str:
    """A location as text: ("body", "alwayson_scripts", "ControlNet", "args", 0, "image") ->
    "alwayson_scripts.ControlNet.args[0].image"."""
    text = ""
    for part in loc[1:]:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
