"""The server's models: the checkpoints, VAEs, LoRAs and embeddings it may use (the shipped toy and
what lies inside the model roots; a name from a client is only ever resolved inside them), the
loaded pipeline, and A1111's options that select among them."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional

from ..loaders.model_folders import ModelFolders
from ..loading import SHIPPED_MODELS



class OptionError(ValueError):
    """A bad option or model name; `field` names it for the 422 answer."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name


def _int_in(lo: int, hi: int):
    def check(name, v):
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise OptionError(name, f"{name}={str(v)[:40]!r}; expected an integer in [{lo}, {hi}]")
        return v
    return check


def _float_in(lo: float, hi: float):
    def check(name, v):
        try:
            ok = not isinstance(v, bool) and isinstance(v, (int, float)) and lo <= float(v) <= hi
        except OverflowError:  # an integer too large for a float
            ok = False
        if not ok:
            raise OptionError(name, f"{name}={str(v)[:40]!r}; expected a number in [{lo}, {hi}]")
        return float(v)
    return check


def _one_of(*values):
    def check(name, v):
        if v not in values:
            raise OptionError(name, f"{name}={v!r}; supported: {', '.join(map(repr, values))}")
        return v
    return check


def _bool(name, v):
    if not isinstance(v, bool):
        raise OptionError(name, f"{name}={v!r}; expected true or false")
    return v


# A1111 options sdrt honours (modules/shared_options.py names and defaults); sd_model_checkpoint and
# sd_vae are handled by ModelManager.
OPTIONS: dict[str, tuple[Any, Any]] = {
    "CLIP_stop_at_last_layers": (1, _int_in(1, 12)),
    "eta_noise_seed_delta": (0, _int_in(0, 2**31 - 1)),
    "eta_ancestral": (1.0, _float_in(0.0, 1.0)),
    "eta_ddim": (0.0, _float_in(0.0, 1.0)),
    "s_churn": (0.0, _float_in(0.0, 100.0)),
    "s_tmin": (0.0, _float_in(0.0, 1e4)),
    "s_noise": (1.0, _float_in(0.0, 2.0)),
    "samples_format": ("png", _one_of("png")),
    "randn_source": ("CPU", _one_of("CPU")),  # sdrt draws noise on the CPU (reproducible anywhere)
    "live_previews_enable": (True, _bool),
}
MODEL_OPTIONS = ("sd_model_checkpoint", "sd_vae")
READ_ONLY_OPTIONS = ("sd_checkpoint_hash",)  # GET /options lists them; a POST of them back changes nothing


@dataclass
class Loaded:
    pipe: Any
    checkpoint: str            # the title clients see ("toy" or the file's title in the folder)
    vae: str = "Automatic"     # "Automatic" / "None" (the model's own) or a VAE title


@dataclass
class ModelManager:
    """Lists and resolves models (only inside the roots) and loads them: call `load` from the
    worker thread only, which owns the pipeline."""
    folders: Optional[ModelFolders]
    load_kwargs: dict = field(default_factory=dict)
    loaded: Optional[Loaded] = None
    hires: Optional[Loaded] = None  # the last hr_checkpoint_name model, kept for the next hires job
    refiner: Optional[Loaded] = None  # the last refiner_checkpoint model, kept for the next job
    options: dict = field(default_factory=lambda: {k: v[0] for k, v in OPTIONS.items()})
    _upscalers: Any = field(default=None, repr=False)

    # --- listing ------------------------------------------------------------------------------
    def checkpoints(self) -> list[dict]:
        items = [{"title": name, "model_name": name, "hash": None, "sha256": None, "filename": name, "config": None}
                 for name in SHIPPED_MODELS]
        for e in self._entries("checkpoints"):
            items.append({"title": e.title, "model_name": os.path.splitext(e.title)[0], "hash": None, "sha256": None,
                          "filename": e.path, "config": None})
        return items

    def vaes(self) -> list[dict]:
        return [{"model_name": e.title, "filename": e.path} for e in self._entries("vae")]

    def loras(self) -> list[dict]:
        from ..loaders.state_dict import read_safetensors_header

        out = []
        for e in self._entries("lora"):
            meta = {}
            if e.path.lower().endswith(".safetensors"):
                try:
                    meta = dict(read_safetensors_header(e.path).metadata)
                except Exception:  # listing goes on; using it will report what is wrong
                    meta = {}
            out.append({"name": e.name, "alias": meta.get("ss_output_name", e.name), "path": e.path, "metadata": meta})
        return out

    def _entries(self, kind: str):
        return self.folders.list(kind) if self.folders is not None else []

    # --- resolving (never outside the roots) --------------------------------------------------
    def resolve_checkpoint(self, name: str, field_name: str = "sd_model_checkpoint") -> tuple[str, str]:
        """(title, what sdrt.load takes) for a client's checkpoint name."""
        if not isinstance(name, str) or not name.strip():
            raise OptionError(field_name, f"{field_name}: expected a checkpoint name")
        for shipped in SHIPPED_MODELS:
            if name.strip() == shipped or name.strip().startswith(shipped + " ["):
                return shipped, shipped
        if self.folders is None:
            raise OptionError(field_name, f"{field_name}={name!r}: unknown; the server has no --models-dir, "
                                          f"so only {', '.join(SHIPPED_MODELS)} are available")
        try:
            path = self.folders.resolve("checkpoints", name)
        except ValueError as e:  # unknown or unsafe names
            raise OptionError(field_name, f"{field_name}: {e}") from None
        return os.path.relpath(path, self.folders.folder("checkpoints")).replace(os.sep, "/"), path

    def resolve_vae(self, name: str, field_name: str = "sd_vae") -> tuple[str, Optional[str]]:
        if name in ("Automatic", "None", None):
            return name or "None", None
        if self.folders is None:
            raise OptionError(field_name, f"{field_name}={name!r}: unknown; the server has no --models-dir")
        try:
            path = self.folders.resolve("vae", name)
        except ValueError as e:
            raise OptionError(field_name, f"{field_name}: {e}") from None
        return os.path.relpath(path, self.folders.folder("vae")).replace(os.sep, "/"), path

    # --- loading (worker thread) --------------------------------------------------------------
    def load(self, checkpoint: str, vae: str = "Automatic") -> Loaded:
        """Load `checkpoint` (a client's name) with `vae`, unless that is what is loaded."""
        from ..loading import load

        title, target = self.resolve_checkpoint(checkpoint)
        vae_title, vae_path = self.resolve_vae(vae)
        if self.loaded is not None and (self.loaded.checkpoint, self.loaded.vae) == (title, vae_title):
            return self.loaded
        pipe = load(target, vae=vae_path, models_dir=self.folders.root if self.folders else None, **self.load_kwargs)
        self.loaded = Loaded(pipe, title, vae_title)
        return self.loaded

    def load_hires(self, checkpoint: str) -> Loaded:
        """The hires pass's model (hr_checkpoint_name): the loaded one when it is the same, else
        loaded beside it with its own VAE, and kept."""
        self.hires = self._load_beside(checkpoint, "hr_checkpoint_name", self.hires)
        return self.hires

    def load_refiner(self, checkpoint: str) -> Loaded:
        """The refiner (refiner_checkpoint), loaded beside the main model once and kept."""
        self.refiner = self._load_beside(checkpoint, "refiner_checkpoint", self.refiner)
        return self.refiner

    def _load_beside(self, checkpoint: str, field_name: str, kept: Optional[Loaded]) -> Loaded:
        from ..loading import load

        title, target = self.resolve_checkpoint(checkpoint, field_name)
        for held in (self.loaded, kept, self.hires, self.refiner):
            if held is not None and held.checkpoint == title and held.vae == "Automatic":
                return held
        pipe = load(target, models_dir=self.folders.root if self.folders else None, **self.load_kwargs)
        return Loaded(pipe, title)

    @property
    def upscalers(self):
        """A1111's upscaler list of these folders (sdrt.postprocess.upscalers), one per manager so
        its loaded models stay cached."""
        from ..postprocess.upscalers import Upscalers

        if self._upscalers is None:
            self._upscalers = Upscalers(self.folders)
        return self._upscalers

    def set_options(self, values: dict) -> dict:
        """Validated copies of the non-model options in `values` (raises OptionError naming the key)."""
        out = {}
        for key, value in values.items():
            if key in MODEL_OPTIONS or key in READ_ONLY_OPTIONS:
                continue
            if key not in OPTIONS:
                raise OptionError(key, f"option {str(key)[:80]!r} is unknown to sdrt; supported: "
                                       f"{', '.join([*MODEL_OPTIONS, *OPTIONS])}")
            out[key] = OPTIONS[key][1](key, value)
        return out

    def all_options(self) -> dict:
        loaded = self.loaded
        return {"sd_model_checkpoint": loaded.checkpoint if loaded else None,
                "sd_checkpoint_hash": getattr(loaded.pipe.info, "hash", None) if loaded else None,
                "sd_vae": loaded.vae if loaded else "Automatic", **self.options}
