"""Reading tensors out of model files without ever running code from them.

Two container families reach us from model sites:

* ``.safetensors``: an 8-byte little-endian header length, a JSON header, then raw tensor bytes.
  The header is parsed and checked here (see :func:`read_safetensors_header`) before the
  ``safetensors`` library memory-maps the file, so a truncated download or a malformed header is
  reported with the file and tensor name instead of surfacing as an opaque error (or a huge
  allocation) later.
* pickles (``.ckpt .pt .pth .bin``): only ever opened through torch's restricted unpickler, via
  :func:`sdrt.loaders.safe_pickle.load_pickle`.

Every problem with a file is a :class:`ModelFileError` whose message starts with the file path.
"""
from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import torch
from safetensors import SafetensorError, safe_open

__all__ = [
    "ModelFileError",
    "SafetensorsHeader",
    "read_safetensors_header",
    "read_state_dict",
    "SAFETENSORS_EXTENSIONS",
    "PICKLE_EXTENSIONS",
]

PathLike = Union[str, os.PathLike]
KeySelector = Union[Iterable[str], Callable[[str], bool], None]
TensorEntry = tuple[str, tuple[int, ...], tuple[int, int]]

SAFETENSORS_EXTENSIONS = (".safetensors",)
PICKLE_EXTENSIONS = (".ckpt", ".pt", ".pth", ".bin")

# Real headers are at most a few MB (tens of thousands of keys); anything larger is corrupt or
# hostile, and we refuse it before reading it into memory.
MAX_HEADER_BYTES = 100 * 1024 * 1024

# Bytes per element of every dtype the safetensors format defines and torch can hold.
SAFETENSORS_DTYPE_SIZES: dict[str, int] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E4M3FNUZ": 1,
    "F8_E5M2": 1,
    "F8_E5M2FNUZ": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
    "C64": 8,
}


class ModelFileError(ValueError):
    """A model file that cannot be read safely. The message names the file (and the first bad key
    where there is one); ``path`` and ``key`` carry the same for callers."""

    def __init__(self, path: PathLike, problem: str, key: str | None = None) -> None:
        self.path = str(path)
        self.key = key
        self.problem = problem
        where = f"{self.path}: key {key!r}" if key is not None else self.path
        super().__init__(f"{where}: {problem}")

    def __reduce__(self):  # keep the exception picklable across process pools
        return (type(self), (self.path, self.problem, self.key))


@dataclass(frozen=True)
class SafetensorsHeader:
    """The validated header of a ``.safetensors`` file.

    ``tensors`` maps each name to ``(dtype, shape, (start, end))`` where the byte span is relative
    to ``data_start`` (the absolute offset of the data section, ``8 + header length``), in file
    order as written by the header."""

    metadata: dict[str, str]
    tensors: dict[str, TensorEntry]
    data_start: int


def existing_file(path: PathLike) -> Path:
    """``path`` as a Path, or a ModelFileError when it is missing or not a regular file."""
    p = Path(path)
    if not p.exists():
        raise ModelFileError(p, "file not found (No such file or directory)")
    if not p.is_file():
        raise ModelFileError(p, "not a regular file")
    return p


# --------------------------------------------------------------------------------------------
# safetensors header
# --------------------------------------------------------------------------------------------


def read_safetensors_header(path: PathLike) -> SafetensorsHeader:
    """Parse and validate the header of a ``.safetensors`` file without reading any tensor data.

    Checks, in order: the header length is sane, the JSON is a valid object without duplicate
    keys, ``__metadata__`` maps strings to strings, each tensor has a known dtype, a valid shape
    and a byte span of exactly ``numel * itemsize``; then that no tensor lies beyond the end of
    the file (a truncated download), that spans do not overlap, and that they tile the data
    section without holes or trailing bytes (as the safetensors library itself requires)."""
    p = existing_file(path)
    file_size = p.stat().st_size
    with open(p, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ModelFileError(p, f"too short for a safetensors file ({file_size} bytes)")
        (header_len,) = struct.unpack("<Q", prefix)
        _check_header_length(p, header_len, file_size)
        raw = f.read(header_len)
    entries = _parse_header_json(p, raw)
    metadata = _parse_metadata(p, entries.pop("__metadata__", None))
    tensors = {name: _parse_tensor_entry(p, name, entry) for name, entry in entries.items()}
    data_start = 8 + header_len
    _check_spans(p, tensors, data_start, file_size)
    return SafetensorsHeader(metadata=metadata, tensors=tensors, data_start=data_start)


def _check_header_length(path: Path, header_len: int, file_size: int) -> None:
    if header_len >= MAX_HEADER_BYTES:
        raise ModelFileError(
            path, f"safetensors header length {header_len} is implausibly large (corrupt file?)"
        )
    if 8 + header_len > file_size:
        raise ModelFileError(
            path,
            f"safetensors header length {header_len} exceeds the file size {file_size} "
            "(truncated or not a safetensors file)",
        )


def _reject_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # json keeps the last of duplicate keys silently; two definitions of one tensor are ambiguous.
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _parse_header_json(path: Path, raw: bytes) -> dict[str, object]:
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_reject_duplicate_keys)
    except (UnicodeDecodeError, ValueError) as e:
        raise ModelFileError(path, f"safetensors header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise ModelFileError(path, "safetensors header is not a JSON object")
    return header


def _parse_metadata(path: Path, metadata: object) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise ModelFileError(path, "safetensors __metadata__ is not a JSON object", "__metadata__")
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise ModelFileError(path, "safetensors __metadata__ values must be strings", key)
    return dict(metadata)


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _parse_tensor_entry(path: Path, name: str, entry: object) -> TensorEntry:
    if not isinstance(entry, dict):
        raise ModelFileError(path, "tensor entry is not a JSON object", name)
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in SAFETENSORS_DTYPE_SIZES:
        known = ", ".join(SAFETENSORS_DTYPE_SIZES)
        raise ModelFileError(path, f"unknown dtype {dtype!r} (known: {known})", name)
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise ModelFileError(path, f"invalid shape {shape!r}", name)
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_int(o) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise ModelFileError(path, f"invalid data_offsets {offsets!r}", name)
    start, end = offsets
    expected = math.prod(shape) * SAFETENSORS_DTYPE_SIZES[dtype]
    if end - start != expected:
        raise ModelFileError(
            path,
            f"data span is {end - start} bytes but {dtype} of shape {tuple(shape)} "
            f"needs {expected}",
            name,
        )
    return dtype, tuple(shape), (start, end)


def _check_spans(
    path: Path, tensors: Mapping[str, TensorEntry], data_start: int, file_size: int
) -> None:
    data_len = file_size - data_start
    ordered = sorted((span[0], span[1], name) for name, (_, _, span) in tensors.items())
    # Truncation first: it is by far the most common real problem (an interrupted download).
    for start, end, name in ordered:
        if end > data_len:
            raise ModelFileError(
                path,
                f"file is truncated: the tensor's data ends at byte {data_start + end} "
                f"but the file has only {file_size} bytes",
                name,
            )
    covered, previous = 0, None
    for start, end, name in ordered:
        if start < covered:
            raise ModelFileError(path, f"data overlaps that of tensor {previous!r}", name)
        if start > covered:
            # Unindexed bytes could hide a second file format inside this one (polyglots).
            raise ModelFileError(path, f"hole of {start - covered} unindexed bytes before it", name)
        covered, previous = end, name
    if covered != data_len:
        raise ModelFileError(
            path, f"{data_len - covered} trailing bytes after the last tensor's data"
        )


# --------------------------------------------------------------------------------------------
# state dicts
# --------------------------------------------------------------------------------------------


def read_state_dict(
    path: PathLike,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    keys: KeySelector = None,
) -> dict[str, torch.Tensor]:
    """Read the tensors of a model file into a flat ``{name: tensor}`` dict.

    ``.safetensors`` files are validated by :func:`read_safetensors_header` and then memory-mapped
    by the safetensors library; pickle formats (``.ckpt .pt .pth .bin``) go through torch's
    restricted unpickler only. A checkpoint nesting its weights under ``"state_dict"`` (as
    Lightning / A1111 checkpoints do) is unwrapped, and its other top-level entries (optimizer
    state, epoch, callbacks) are dropped.

    ``dtype`` casts floating-point tensors only (integer buffers such as position ids keep their
    type). ``keys`` selects tensors: an iterable of names (each must exist) or a predicate on the
    name; for safetensors the unselected tensors are never read."""
    p = existing_file(path)
    suffix = p.suffix.lower()
    if suffix in SAFETENSORS_EXTENSIONS:
        tensors = _read_safetensors(p, keys)
    elif suffix in PICKLE_EXTENSIONS:
        tensors = _read_pickled_state_dict(p, keys)
    else:
        supported = ", ".join(SAFETENSORS_EXTENSIONS + PICKLE_EXTENSIONS)
        raise ModelFileError(
            p, f"unsupported model file extension {suffix or '(none)'!r}; supported: {supported}"
        )
    target = torch.device(device)
    return {name: _convert(t, dtype, target) for name, t in tensors.items()}


def _select(path: Path, available: Iterable[str], keys: KeySelector) -> list[str]:
    """The names to load, in file order; every explicitly named key must be present."""
    names = list(available)
    if keys is None:
        return names
    if callable(keys):
        return [n for n in names if keys(n)]
    wanted = [keys] if isinstance(keys, str) else list(keys)  # a lone str is one key, not chars
    present = set(names)
    for key in wanted:
        if key not in present:
            raise ModelFileError(path, "requested tensor is not in the file", key)
    chosen = set(wanted)
    return [n for n in names if n in chosen]


def _read_safetensors(path: Path, keys: KeySelector) -> dict[str, torch.Tensor]:
    header = read_safetensors_header(path)
    names = _select(path, header.tensors, keys)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {name: f.get_tensor(name) for name in names}
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise ModelFileError(path, f"safetensors could not read the file: {e}") from e


def _read_pickled_state_dict(path: Path, keys: KeySelector) -> dict[str, torch.Tensor]:
    # Imported here: safe_pickle imports ModelFileError from this module.
    from sdrt.loaders.safe_pickle import load_pickle

    state = unwrap_state_dict(path, load_pickle(path))
    return {name: state[name] for name in _select(path, state, keys)}


def unwrap_state_dict(path: PathLike, obj: object) -> dict[str, torch.Tensor]:
    """The flat tensor dict inside an unpickled checkpoint: ``{"state_dict": {...}, ...}`` is
    unwrapped (repeatedly, some merges nest it twice); every key must be a str and every value a
    tensor, otherwise a ModelFileError names the first bad key."""
    while isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ModelFileError(path, f"holds a {type(obj).__name__}, not a dict of tensors")
    for key, value in obj.items():
        if not isinstance(key, str):
            raise ModelFileError(path, f"non-string key of type {type(key).__name__}", repr(key))
        if not isinstance(value, torch.Tensor):
            raise ModelFileError(path, f"value is a {type(value).__name__}, not a tensor", key)
    return dict(obj)


def _convert(t: torch.Tensor, dtype: torch.dtype | None, device: torch.device) -> torch.Tensor:
    if isinstance(t, torch.nn.Parameter):  # old pickles store Parameters; callers want data
        t = t.detach()
    if dtype is not None and t.is_floating_point():
        t = t.to(dtype)  # cast before moving: fewer bytes to transfer when narrowing
    return t.to(device)
