"""LoRA / LyCORIS networks for a generation job: from ``<lora:name:w>`` tags and the ``loras=`` API
argument to weights patched into the UNet and text encoder for the job, and back.

Names from prompts are looked up only inside the model folders' Lora folder (no path traversal);
the ``loras=`` argument of the Python API may also give a file path. A job applies the networks of
its first prompt plus ``loras`` (A1111 activates the first prompt's), and removes them when it
ends, so the base model is bit-identical afterwards. Parsed files are cached by path, size and
modification time.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from ..prompt.extra_networks import LoraTag
from .patches import check_patchable

LoraRequest = tuple  # (name_or_path, weight) | (name_or_path, te_weight, unet_weight) | LoraTag


@dataclass
class LoraPatch:
    """The job-scoped patch (pipelines.patches.JobPatch) applying `specs` at run time."""
    specs: list
    infotext: dict
    name: str = "loras"
    needs_weights: bool = True
    hint: str = "merge them before export (sdrt export --lora)"

    def apply(self, backend) -> Callable[[], None]:
        from ..loaders.lora import apply_networks

        return apply_networks(backend.unet, text_encoders(backend), self.specs).remove


class Networks:
    def __init__(self, pipeline):
        self.pipeline = pipeline
        self._cache: dict[str, tuple[tuple[int, int], object]] = {}

    def patch(self, tags: Sequence[LoraTag], loras: Optional[Sequence[LoraRequest]]) -> Optional[LoraPatch]:
        """The job's networks (the prompt's tags, then `loras`), resolved and loaded: None when
        there are none. Errors name the tag or argument before any weight changes."""
        requests = [(tag, self._from_folder(tag.name)) for tag in tags]
        requests += [self._from_argument(item) for item in (loras or [])]
        if not requests:
            return None
        check_patchable(LoraPatch.name, LoraPatch.hint, self.pipeline.backend)  # before reading any file
        specs = [(self._load(path), tag.te_weight, tag.unet_weight) for tag, path in requests]
        return LoraPatch(specs, {"Lora hashes": ", ".join(f"{tag.name}: {_short_hash(path)}" for tag, path in requests)})

    def merge(self, loras: Sequence[LoraRequest]) -> list[str]:
        """Merge networks into the weights for good (for export or a merged single file); returns
        the names merged."""
        from ..loaders.lora import merge_networks

        requests = [self._from_argument(item) for item in loras]
        backend = self.pipeline.backend
        merge_networks(backend.unet, text_encoders(backend),
                       [(self._load(path), tag.te_weight, tag.unet_weight) for tag, path in requests])
        return [tag.name for tag, _ in requests]

    def _from_folder(self, name: str) -> str:
        folders = self.pipeline.model_folders
        if folders is None:
            raise ValueError(f"prompt: <lora:{name}>: no model folder to look LoRAs up in; load with models_dir= "
                             "or set SDRT_MODELS_ROOT")
        return folders.resolve("lora", name)

    def _from_argument(self, item) -> tuple[LoraTag, str]:
        if isinstance(item, LoraTag):
            tag = item
        elif isinstance(item, (tuple, list)) and len(item) in (2, 3) and isinstance(item[0], (str, os.PathLike)):
            try:
                te = float(item[1])
                tag = LoraTag(os.fspath(item[0]), te, float(item[2]) if len(item) == 3 else te)
            except (TypeError, ValueError):
                raise ValueError(f"loras: {item!r}: weights must be numbers") from None
        else:
            raise ValueError(f"loras: {item!r}; expected (name_or_path, weight) or (name_or_path, te_weight, "
                             "unet_weight)")
        path = os.path.expanduser(tag.name)
        if os.path.isfile(path):  # the API caller may name a file directly
            return LoraTag(os.path.splitext(os.path.basename(path))[0], tag.te_weight, tag.unet_weight), path
        return tag, self._from_folder(tag.name)

    def _load(self, path: str):
        from ..loaders.lora import load_network

        st = os.stat(path)
        stamp = (st.st_size, st.st_mtime_ns)
        cached = self._cache.get(path)
        if cached is None or cached[0] != stamp:
            cached = self._cache[path] = (stamp, load_network(path))
        return cached[1]


def text_encoders(backend) -> dict:
    """The backend's text encoders by component name (SDXL: both; a refiner: text_encoder_2 alone)."""
    return {name: getattr(backend, name, None) for name in ("text_encoder", "text_encoder_2")
            if getattr(backend, name, None) is not None}


def _short_hash(path: str) -> str:
    """A1111's LoRA hash: the first 12 hex of the safetensors "addnet" hash (of the tensors, not the
    header), else of the file's sha256."""
    from ..loaders.hashes import autov3, sha256

    return autov3(path) if path.endswith(".safetensors") else sha256(path)[:12]
