"""What every exporter needs from its input: a loaded torch-backend Pipeline (LoRAs merged on
request), a writable output folder and the model facts a backend needs to run the export.

The exporters take a loaded model instead of loading one themselves, so the export stage depends
on the modules it converts and not on the loader or the pipelines (sdrt.load stays the one way a
model file becomes modules).
"""
from __future__ import annotations

import copy
import os
import re
from typing import Callable, Optional, Sequence


def require_torch_pipeline(pipe, *, exporter: str) -> None:
    """Refuse what is not a Pipeline holding torch modules, saying how to get one."""
    if isinstance(pipe, (str, os.PathLike)):
        raise TypeError(f"{exporter}: takes a loaded model, not {os.fspath(pipe)!r}: "
                        f"pipe = sdrt.load({os.fspath(pipe)!r}); {exporter}(pipe, out_dir)")
    backend = getattr(pipe, "backend", None)
    capabilities = getattr(backend, "capabilities", None)
    if capabilities is None or not capabilities.patchable_weights:
        raise ValueError(f"{exporter}: expected a Pipeline on the torch backend (sdrt.load(model)), got "
                         f"{type(pipe).__name__} on backend {getattr(backend, 'name', None)!r}; an exported "
                         "model cannot be exported again")


def with_loras(pipe, loras: Optional[Sequence], say: Callable[[str], None], *, in_place: bool = False):
    """`pipe` with `loras` [(name_or_path, weight), ...] merged into a copy of it (into `pipe`
    itself when `in_place`: a caller that no longer needs the unmerged model saves its memory)."""
    if not loras:
        return pipe
    pipe = pipe if in_place else copy.deepcopy(pipe)
    say(f"merging {', '.join(pipe.networks.merge(loras))}")
    return pipe


def check_writable(out_dir: str) -> None:
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise PermissionError(f"out_dir={out_dir!r}: cannot create it ({exc.strerror}); choose a writable folder") \
            from None
    if not os.access(out_dir, os.W_OK):
        raise PermissionError(f"out_dir={out_dir!r}: not writable; choose a writable folder")


def check_components(names: Sequence[str], valid) -> list[str]:
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(f"components: {', '.join(unknown)} unknown; valid: {', '.join(valid)}")
    return list(names)


def model_facts(pipe) -> dict:
    """The ModelInfo fields a backend rebuilds the pipeline from (sdrt.load of an export folder);
    the family and SDXL's time-id count decide how its prompts are encoded and what its UNet takes."""
    info = pipe.info
    return {"name": info.name, "scaling_factor": info.scaling_factor, "default_size": info.default_size,
            "latent_channels": info.latent_channels, "unet_in_channels": info.unet_in_channels,
            "prediction_type": info.prediction_type, "family": info.family, "hash": info.hash,
            "added_time_ids": int(info.added_time_ids)}


def controlnets_for_export(pipe, names: Sequence[str], components: Sequence[str]) -> list[tuple[str, object, str]]:
    """(folder name, ControlNetModel, infotext title) of each ControlNet, resolved and checked as a
    unit's model is (sdrt.control.attach); all must give the same residual layout."""
    from sdrt.loaders.model_folders import without_hash_suffix

    from .controlnet_specs import residual_layout

    if isinstance(names, (str, os.PathLike)):
        raise TypeError(f"controlnets={os.fspath(names)!r}: expected a list of names or paths")
    controls: list[tuple[str, object, str]] = []
    for i, name in enumerate(names or ()):
        field = f"controlnets[{i}]"
        if "unet" not in components:
            raise ValueError(f"{field}={name!r}: ControlNets are exported with the UNet; add unet to the components")
        model, title = pipe.control.load(name, field)
        if int(model.config.in_channels) != int(pipe.unet.config.in_channels):
            raise ValueError(f"{field}={name!r}: a ControlNet for a {model.config.in_channels}-channel UNet does not fit "
                             f"this model's {pipe.unet.config.in_channels}-channel UNet (an inpainting model?)")
        key = re.sub(r"[^A-Za-z0-9._-]+", "_", without_hash_suffix(title)).strip("._") or f"controlnet_{i}"
        if key in [k for k, _, _ in controls]:
            raise ValueError(f"{field}={name!r}: {title} is already in the export")
        if controls and residual_layout(model) != residual_layout(controls[0][1]):
            raise ValueError(f"{field}={name!r}: its residuals differ from {controls[0][2]}'s "
                             f"({residual_layout(model)} vs {residual_layout(controls[0][1])})")
        controls.append((key, model, title))
    return controls


def controlnet_facts(model, title: str) -> dict:
    """What a ControlNet's manifest entry says besides its graph (every exporter writes these):
    its infotext title and whether it pools its conditions (a shuffle model: cond rows only)."""
    return {"title": title, "global_pool_conditions": bool(model.config.global_pool_conditions)}
