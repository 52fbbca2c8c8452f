"""Textual-inversion embeddings, as A1111 reads them (modules/textual_inversion/textual_inversion.py).

A user drops ``easynegative.safetensors`` or ``bad-hands-5.pt`` into ``models/embeddings`` and
writes the file's stem in a prompt; the embedding's vectors then take the place of those tokens.
:class:`EmbeddingDatabase.find_embedding` is the hook ``sdrt.prompt.chunking`` calls while it walks
a prompt's token ids.

Vectors are kept per text encoder, under these keys:

- ``"clip_l"``: OpenAI CLIP ViT-L/14 (SD1.x, 768 wide; SDXL's first encoder; also the toy family,
  which is SD1.x's classes at toy sizes),
- ``"clip_h"``: OpenCLIP ViT-H/14 (SD2.x, 1024 wide),
- ``"clip_g"``: OpenCLIP ViT-bigG/14 (SDXL's second encoder, 1280 wide).

Single-tensor files do not say which encoder they were trained for; A1111 only compares widths.
They are filed under ``"clip_h"`` when 1024 wide and ``"clip_l"`` otherwise. SDXL files carry a
``clip_l``/``clip_g`` pair.

Formats read: A1111 ``.pt`` (``string_to_param``), A1111/kohya ``.safetensors`` (``emb_params``),
SDXL ``.safetensors`` (``clip_l`` + ``clip_g``), diffusers ``learned_embeds.bin/.safetensors``
(one ``{"<token>": tensor}`` entry), 1-D single vectors. A1111's image embeddings (.png/.webp with
the data hidden in the pixels or a text chunk) are not read. Pickles go through
:func:`sdrt.loaders.safe_pickle.load_pickle` (torch's weights-only unpickler): never unpickled
without restriction.
"""
from __future__ import annotations

import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import torch

from .safe_pickle import load_pickle

__all__ = ["EMBEDDING_SUFFIXES", "Embedding", "EmbeddingDatabase", "load_embedding"]

EMBEDDING_SUFFIXES = (".pt", ".bin", ".safetensors")
_PICKLE_SUFFIXES = (".pt", ".bin")
_SDXL_KEYS = ("clip_l", "clip_g")


@dataclass
class Embedding:
    """One textual-inversion embedding.

    name: A1111's name, the file stem (a name stored inside a .pt is ignored, as in A1111).
    vectors: encoder key -> (n, D) float32 tensor; every encoder has the same n.
    step: training step, when the file stores it.
    hash: left for the hashes module (A1111 shows a short sha256); None for now.
    """
    name: str
    vectors: dict[str, torch.Tensor]
    path: Optional[str] = None
    step: Optional[int] = None
    hash: Optional[str] = None

    @property
    def num_vectors(self) -> int:
        return int(next(iter(self.vectors.values())).shape[0])

    def describe_shapes(self) -> str:
        """E.g. ``"clip_l 2x768, clip_g 2x1280"``, for messages."""
        return ", ".join(f"{k} {v.shape[0]}x{v.shape[1]}" for k, v in sorted(self.vectors.items()))


def load_embedding(path: str | os.PathLike) -> Embedding:
    """Read an embedding file. Raises ValueError naming the file for an unknown layout (with the
    keys found), an unsupported suffix, an unreadable file, or a pickle that holds anything but
    tensors and plain containers."""
    path = os.fspath(path)
    stem, suffix = os.path.splitext(os.path.basename(path))
    data = _read(path, suffix.lower())
    vectors, step = _parse(data, path)
    return Embedding(name=stem, vectors=vectors, path=path, step=step)


def _read(path: str, suffix: str) -> Any:
    if suffix == ".safetensors":
        import safetensors
        import safetensors.torch

        try:
            return safetensors.torch.load_file(path, device="cpu")
        except safetensors.SafetensorError as e:
            raise ValueError(f"{path}: not a readable safetensors file: {e}") from e
    if suffix in _PICKLE_SUFFIXES:
        # torch's weights-only unpickler behind container checks; refusals are ValueErrors naming the file
        return load_pickle(path)
    raise ValueError(f"{path}: not an embedding file (expected {', '.join(EMBEDDING_SUFFIXES)})")


def _parse(data: Any, path: str) -> tuple[dict[str, torch.Tensor], Optional[int]]:
    """The file's contents -> (vectors per encoder, training step)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: unknown embedding layout: a {type(data).__name__}, not a dict")
    if "string_to_param" in data:  # A1111 .pt
        params = data["string_to_param"]
        if not isinstance(params, Mapping):
            raise ValueError(f"{path}: string_to_param is a {type(params).__name__}, not a dict")
        tensor = _only_tensor(params, path, "string_to_param")
        vectors = _single_encoder(tensor)
    elif all(k in data for k in _SDXL_KEYS):  # SDXL pair
        vectors = {k: _as_matrix(data[k], path, k) for k in _SDXL_KEYS}
        counts = {k: int(v.shape[0]) for k, v in vectors.items()}
        if len(set(counts.values())) != 1:
            raise ValueError(f"{path}: clip_l and clip_g hold different vector counts {counts}")
    elif len(data) == 1 and isinstance(next(iter(data.values())), torch.Tensor):
        # kohya's {"emb_params": t} and diffusers' {"<token>": t}
        vectors = _single_encoder(_only_tensor(data, path, "file"))
    else:
        keys = ", ".join(repr(k) for k in list(data)[:20]) or "none"
        raise ValueError(f"{path}: unknown embedding layout; keys found: {keys}")
    return vectors, _step(data)


def _only_tensor(params: Mapping, path: str, where: str) -> torch.Tensor:
    if len(params) != 1:
        keys = ", ".join(repr(k) for k in list(params)[:20]) or "none"
        raise ValueError(f"{path}: {where} must hold exactly one embedding; keys found: {keys}")
    key, value = next(iter(params.items()))
    return _as_matrix(value, path, str(key))


def _as_matrix(value: Any, path: str, key: str) -> torch.Tensor:
    """A float (n, D) tensor; a 1-D vector is one token's worth, (1, D)."""
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        kind = f"a {value.dtype} tensor" if isinstance(value, torch.Tensor) else f"a {type(value).__name__}"
        raise ValueError(f"{path}: {key!r} is {kind}, not float vectors")
    if value.dim() == 1:
        value = value.unsqueeze(0)
    if value.dim() != 2 or value.shape[0] == 0 or value.shape[1] == 0:
        raise ValueError(f"{path}: {key!r} has shape {tuple(value.shape)}; expected (vectors, width)")
    # A copy: the loaders may memory-map the file, and embeddings outlive it (a user may replace it).
    return value.detach().to(torch.float32, copy=True).contiguous()


def _single_encoder(tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    # Only the width tells SD2 (OpenCLIP ViT-H, 1024) apart from SD1 (768) and the toy family.
    return {"clip_h" if tensor.shape[1] == 1024 else "clip_l": tensor}


def _step(data: Mapping) -> Optional[int]:
    step = data.get("step")
    if isinstance(step, torch.Tensor) and step.numel() == 1:
        step = step.item()
    # numbers.Real: older files store a numpy scalar
    return int(step) if isinstance(step, numbers.Real) and not isinstance(step, bool) else None


class EmbeddingDatabase:
    """The embeddings usable with one text encoder of a model, looked up by name in token ids.

    tokenizer: the model's CLIP tokenizer (names are tokenized as prompts are, without BOS/EOS).
    encoder_key: which vectors the hook returns ("clip_l", "clip_h" or "clip_g").
    dim: that encoder's width; embeddings of another width are skipped.
    model_encoders: all the model's encoders (default: just `encoder_key`). An embedding must carry
        vectors for exactly these, as A1111 skips embeddings of another model family: an SDXL
        pair is not used on SD1.x, nor an SD1.x file on SDXL. For SDXL make one database per
        encoder, both with ``model_encoders=("clip_l", "clip_g")``.

    Problems never raise: the embedding is left out and ``skipped[path or name]`` says why.
    """

    def __init__(self, tokenizer, encoder_key: str, dim: int, *, model_encoders: Sequence[str] | None = None):
        self.tokenizer, self.encoder_key, self.dim = tokenizer, encoder_key, int(dim)
        self.model_encoders = frozenset(model_encoders or (encoder_key,))
        if encoder_key not in self.model_encoders:
            raise ValueError(f"encoder_key={encoder_key!r} is not among model_encoders {sorted(self.model_encoders)}")
        self.embeddings: dict[str, Embedding] = {}
        self.skipped: dict[str, str] = {}
        # first token id -> [(name's token ids, embedding)], longest name first
        self._by_first_id: dict[int, list[tuple[tuple[int, ...], Embedding]]] = {}

    def __len__(self) -> int:
        return len(self.embeddings)

    def names(self) -> list[str]:
        """Names of the usable embeddings, sorted."""
        return sorted(self.embeddings)

    def add(self, embedding: Embedding) -> bool:
        """Register `embedding` (replacing one of the same name, as A1111 does); False when it does
        not fit this model, the reason then being in ``skipped``."""
        where = embedding.path or embedding.name
        reason = self._mismatch(embedding)
        ids = () if reason else self._name_ids(embedding.name)
        if not reason and not ids:
            reason = f"{where}: the name {embedding.name!r} tokenizes to nothing, so no prompt can use it"
        if reason:
            self.skipped[where] = reason
            return False
        old = self.embeddings.get(embedding.name)
        if old is not None:
            self._unregister(old)
            if old.path != embedding.path:
                self.skipped[old.path or old.name] = f"{old.path or old.name}: replaced by {where} (same name)"
        self.embeddings[embedding.name] = embedding
        entries = self._by_first_id.setdefault(ids[0], [])
        entries.append((ids, embedding))
        entries.sort(key=lambda entry: len(entry[0]), reverse=True)
        self.skipped.pop(where, None)
        return True

    def remove(self, name: str, reason: str) -> None:
        """Take `name` out, recording `reason` in ``skipped``."""
        embedding = self.embeddings.pop(name)
        self._unregister(embedding)
        where = embedding.path or embedding.name
        self.skipped[where] = f"{where}: {reason}"

    def load_dir(self, folder: str | os.PathLike) -> list[Embedding]:
        """Load every .pt/.safetensors/.bin under `folder` (recursively, in sorted order); a file
        that fails to load is recorded in ``skipped`` and passed over. Returns those added."""
        folder = os.fspath(folder)
        if not os.path.isdir(folder):
            self.skipped[folder] = f"{folder}: not a folder"
            return []
        added = []
        for path in _embedding_files(folder):
            if os.path.getsize(path) == 0:
                self.skipped[path] = f"{path}: empty file"
                continue
            try:
                embedding = load_embedding(path)
            except Exception as e:  # any broken download must not stop the others (A1111 does the same)
                self.skipped[path] = str(e) if path in str(e) else f"{path}: {type(e).__name__}: {e}"
                continue
            if self.add(embedding):
                added.append(embedding)
        return added

    def find_embedding(self, tokens: Sequence[int], position: int) -> Optional[tuple[str, torch.Tensor, int]]:
        """The prompt hook: the embedding whose name's tokens start at ``tokens[position]``, longest
        name first -> (name, (n, dim) vectors, name's token count); None when none matches."""
        for ids, embedding in self._by_first_id.get(int(tokens[position]), ()):
            if tuple(tokens[position:position + len(ids)]) == ids:
                return embedding.name, embedding.vectors[self.encoder_key], len(ids)
        return None

    def _mismatch(self, embedding: Embedding) -> Optional[str]:
        where = embedding.path or embedding.name
        if set(embedding.vectors) != self.model_encoders:
            return (f"{where}: made for another model family (has {embedding.describe_shapes()}; this model "
                    f"needs {', '.join(sorted(self.model_encoders))}, {self.encoder_key} {self.dim} wide)")
        width = int(embedding.vectors[self.encoder_key].shape[1])
        if width != self.dim:
            return (f"{where}: vectors are {width} wide but the model's {self.encoder_key} text encoder is "
                    f"{self.dim} wide (an embedding for another model family)")
        return None

    def _name_ids(self, name: str) -> tuple[int, ...]:
        ids = self.tokenizer([name], truncation=False, add_special_tokens=False, verbose=False)["input_ids"][0]
        return tuple(int(i) for i in ids)

    def _unregister(self, embedding: Embedding) -> None:
        for first_id, entries in list(self._by_first_id.items()):
            entries[:] = [e for e in entries if e[1] is not embedding]
            if not entries:
                del self._by_first_id[first_id]


def _embedding_files(folder: str) -> list[str]:
    """Embedding files under `folder`, sorted; followed symlinks are visited once (no loops)."""
    found, seen = [], set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        found += [os.path.join(root, f) for f in files if f.lower().endswith(EMBEDDING_SUFFIXES)]
    return sorted(found)
