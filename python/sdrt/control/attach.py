"""A pipeline's ControlNet support: the loaded ControlNets (kept per file), a job's units prepared
once, and per sampler run the ExtraInput that adds their residuals (sdrt.control.residuals)."""
from __future__ import annotations

import os
from typing import Optional, Sequence

import torch

from ..pipelines.params import ParamError
from .job import PreparedUnit, infotext_entries, model_title, prepare_units
from .models import SHIPPED_CONTROLNETS, controlnet_path, load_controlnet
from .residuals import ControlNetInputs
from .units import parse_units

KEEP = 2  # ControlNets kept loaded per pipeline


class PipelineControl:
    def __init__(self, pipe):
        self.pipe = pipe
        self._loaded: dict = {}  # (real path, mtime) -> (ControlNetModel, title)

    def prepare(self, job) -> list[PreparedUnit]:
        """The job's units that run, ready; their infotext entries go into the job's."""
        units = parse_units(job.params.controlnet)
        if not any(u.runs for u in units):
            return []
        if not hasattr(self.pipe.backend, "controlnet_forward"):
            raise ParamError("controlnet", f"controlnet: the {self.pipe.backend.name} backend does not run ControlNets "
                                           f"yet; load the model with backend='torch'")
        prepared = prepare_units(units, job.params, job.first_seed, self.load, self.pipe.model_folders)
        job.infotext.update(infotext_entries(prepared))
        return prepared

    def load(self, name: str, field: str = "controlnet.model") -> tuple[object, str]:
        """(ControlNetModel, infotext title) of a model name or path, loaded once per file; on a
        backend running an export, the ControlNet exported with it (backends.exported)."""
        find_exported = getattr(self.pipe.backend, "find_controlnet", None)
        if find_exported is not None:
            try:  # a file's path is matched by its title, so its hash tells another version apart
                return find_exported(model_title(name) if os.path.isfile(name) else name)
            except ValueError as e:
                raise ParamError(field, f"{field}={name!r}: {e}") from e
        try:
            path = controlnet_path(name, self.pipe.model_folders)
        except (ValueError, FileNotFoundError) as e:
            raise ParamError(field, f"{field}={name!r}: {e}") from e
        key = (os.path.realpath(path), os.path.getmtime(path))
        if key not in self._loaded:
            try:
                model = load_controlnet(path, dtype=getattr(self.pipe.backend, "dtype", torch.float32))
            except (ValueError, KeyError, OSError, RuntimeError) as e:
                raise ParamError(field, f"{field}={name!r}: {e}") from e
            self._check_fits(model, name, field)
            title = name if name in SHIPPED_CONTROLNETS else model_title(path)
            # the extension keeps two ControlNets loaded; so does this (and drops replaced files)
            for old in [k for k in self._loaded if k[0] == key[0]] + list(self._loaded)[:-(KEEP - 1) or None]:
                self._loaded.pop(old, None)
            self._loaded[key] = (model, title)
        return self._loaded[key]

    def _check_fits(self, controlnet, name: str, field: str) -> None:
        unet = self.pipe.unet
        if unet is None:
            return
        want, got = int(unet.config.cross_attention_dim), int(controlnet.config.cross_attention_dim)
        if want != got:
            raise ParamError(field, f"{field}={name!r}: a ControlNet for {got}-wide text conditioning does not fit "
                                    f"this {self.pipe.info.family} model ({want}-wide)")

    def inputs(self, prepared: Sequence[PreparedUnit], run_steps: int, width: int, height: int,
               hires: bool = False) -> Optional[ControlNetInputs]:
        """The ExtraInput of one sampler run of `run_steps` steps at `width` x `height`."""
        if not prepared:
            return None
        return ControlNetInputs([u.active(width, height, hires) for u in prepared], run_steps, self.pipe.backend)
