"""Model file hashes as A1111 and model sites (Civitai) show them.

- ``sha256``: the whole file; ``autov2`` is its first 10 hex, A1111's "short hash".
- ``legacy_model_hash``: A1111's old ``model_hash``, 8 hex of the 64 KiB at offset 1 MiB.
- ``addnet_hash_safetensors``: the tensor bytes after a safetensors header, so editing the
  metadata does not change it; A1111 uses it for LoRA and shows 12 hex (``autov3``).

Hashing a multi-GB checkpoint takes seconds, so every result is cached by (absolute path, kind)
and trusted only while the file's mtime and size are unchanged. A :class:`HashCache` may also
persist to a JSON file, as A1111's ``cache.json`` does, so restarts do not rehash.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import BinaryIO

__all__ = [
    "HashCache",
    "addnet_hash_safetensors",
    "autov2",
    "autov3",
    "clear_cache",
    "get_default_cache",
    "legacy_model_hash",
    "set_default_cache",
    "sha256",
]

CHUNK_SIZE = 1 << 20  # 1 MiB reads: large enough to be fast, small enough to stay off the heap
LEGACY_OFFSET = 0x100000
LEGACY_LENGTH = 0x10000
_CACHE_VERSION = 1


def _open_binary(path: str) -> BinaryIO:
    """The one place files are opened for hashing (tests count calls to it)."""
    return open(path, "rb")


def _digest_from(path: str, start: int = 0, length: int | None = None) -> str:
    """sha256 hex of ``length`` bytes (all to the end if None) of ``path`` from ``start``."""
    h = hashlib.sha256()
    with _open_binary(path) as f:
        f.seek(start)
        for chunk in _chunks(f, length):
            h.update(chunk)
    return h.hexdigest()


def _chunks(f: BinaryIO, length: int | None) -> Iterator[bytes]:
    remaining = length
    while remaining is None or remaining > 0:
        chunk = f.read(CHUNK_SIZE if remaining is None else min(CHUNK_SIZE, remaining))
        if not chunk:
            return
        if remaining is not None:
            remaining -= len(chunk)
        yield chunk


def _stamp(path: str) -> tuple[int, int]:
    """(mtime in ns, size): what must match for a cached hash to be trusted.

    os.stat raises FileNotFoundError naming the file, which replaces A1111's "NOFILE" string.
    """
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


class HashCache:
    """Hashes keyed by (absolute path, kind), valid while the file's mtime and size match.

    With ``path`` the cache is loaded from and saved to that JSON file; a missing, unreadable
    or corrupt file is treated as empty (it is only a cache) and is rewritten on the next store.
    Writes go to a temporary file that replaces the old one, so a crash never leaves half a file.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, autosave: bool = True) -> None:
        self.path = os.path.abspath(os.fspath(path)) if path is not None else None
        self.autosave = autosave
        self._lock = threading.Lock()
        # kind -> absolute file path -> (mtime_ns, size, hex digest)
        self._entries: dict[str, dict[str, tuple[int, int, str]]] = {}
        if self.path is not None:
            self._entries = _load(self.path)

    def get(self, path: str, kind: str, stamp: tuple[int, int]) -> str | None:
        """The cached hash, or None when absent or stale for this (mtime_ns, size) stamp."""
        with self._lock:
            entry = self._entries.get(kind, {}).get(path)
        if entry is None or entry[:2] != stamp:
            return None
        return entry[2]

    def put(self, path: str, kind: str, stamp: tuple[int, int], value: str) -> None:
        """Remember ``value`` for this file state; saved at once when ``autosave``."""
        with self._lock:
            self._entries.setdefault(kind, {})[path] = (stamp[0], stamp[1], value)
        if self.autosave:
            self.save()

    def clear(self) -> None:
        """Forget everything (in memory only; the next store rewrites the JSON file)."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._entries.values())

    def save(self) -> None:
        """Write the JSON file atomically (no-op for an in-memory cache)."""
        if self.path is None:
            return
        with self._lock:
            data = {
                "version": _CACHE_VERSION,
                "hashes": {
                    kind: {p: {"mtime_ns": m, "size": s, "hash": v} for p, (m, s, v) in files.items()}
                    for kind, files in self._entries.items()
                },
            }
            _write_atomic(self.path, json.dumps(data, indent=1, sort_keys=True))


def _load(path: str) -> dict[str, dict[str, tuple[int, int, str]]]:
    """Parse a cache file, skipping anything malformed instead of failing."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):  # missing, unreadable, not UTF-8 or not JSON
        return {}
    if not isinstance(data, dict) or data.get("version") != _CACHE_VERSION:
        return {}
    hashes = data.get("hashes")
    if not isinstance(hashes, dict):
        return {}
    out: dict[str, dict[str, tuple[int, int, str]]] = {}
    for kind, files in hashes.items():
        if not isinstance(files, dict):
            continue
        for p, e in files.items():
            if _valid_entry(e):
                out.setdefault(kind, {})[p] = (e["mtime_ns"], e["size"], e["hash"])
    return out


def _valid_entry(e: object) -> bool:
    return (
        isinstance(e, dict)
        and type(e.get("mtime_ns")) is int
        and type(e.get("size")) is int
        and isinstance(e.get("hash"), str)
    )


def _write_atomic(path: str, text: str) -> None:
    """Write to a temporary file beside ``path`` and os.replace it, so readers never see half."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".hashcache-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


_default_cache = HashCache()


def get_default_cache() -> HashCache:
    """The process-wide cache used when a function gets no ``cache`` argument."""
    return _default_cache


def set_default_cache(cache: HashCache) -> HashCache:
    """Install ``cache`` as the process-wide default (e.g. a persistent one); returns the old one."""
    global _default_cache
    old, _default_cache = _default_cache, cache
    return old


def clear_cache() -> None:
    """Empty the process-wide default cache."""
    _default_cache.clear()


def _cached(path: str | os.PathLike[str], kind: str, compute: Callable[[str], str], cache: HashCache | None) -> str:
    """Look ``kind`` up for ``path`` in the cache, computing and storing it on a miss."""
    cache = cache if cache is not None else _default_cache
    path = os.path.abspath(os.fspath(path))
    stamp = _stamp(path)
    value = cache.get(path, kind, stamp)
    if value is not None:
        return value
    value = compute(path)
    # A file rewritten while we read it would pair a stale hash with a fresh stamp: don't cache.
    if _stamp(path) == stamp:
        cache.put(path, kind, stamp, value)
    return value


def sha256(path: str | os.PathLike[str], *, cache: HashCache | None = None) -> str:
    """Lowercase hex sha256 of the whole file, read in 1 MiB chunks, cached."""
    return _cached(path, "sha256", _digest_from, cache)


def autov2(path: str | os.PathLike[str], *, cache: HashCache | None = None) -> str:
    """A1111's short hash (Civitai "AutoV2"): the first 10 hex of :func:`sha256`."""
    return sha256(path, cache=cache)[:10]


def _legacy(path: str) -> str:
    # Same reads as A1111: a file shorter than 1 MiB seeks past its end and hashes b"".
    return _digest_from(path, LEGACY_OFFSET, LEGACY_LENGTH)[:8]


def legacy_model_hash(path: str | os.PathLike[str], *, cache: HashCache | None = None) -> str:
    """A1111's old ``model_hash``: sha256 of 64 KiB at offset 1 MiB, first 8 hex.

    A missing file raises FileNotFoundError (A1111 returned the string "NOFILE").
    """
    return _cached(path, "legacy", _legacy, cache)


def _safetensors_data_offset(path: str) -> int:
    """Offset of the first tensor byte: 8 (the u64 LE header length) plus the header length."""
    size = os.path.getsize(path)
    with _open_binary(path) as f:
        prefix = f.read(8)
    if len(prefix) < 8:
        raise ValueError(f"not a safetensors file (shorter than 8 bytes): {path}")
    offset = 8 + int.from_bytes(prefix, "little")
    # A1111 would hash b"" here; a header longer than the file means it is not safetensors.
    if offset > size:
        raise ValueError(f"not a safetensors file (header length {offset - 8} exceeds file size {size}): {path}")
    return offset


def _addnet(path: str) -> str:
    return _digest_from(path, _safetensors_data_offset(path))


def addnet_hash_safetensors(path: str | os.PathLike[str], *, cache: HashCache | None = None) -> str:
    """sha256 hex of a safetensors file's bytes after its header (A1111's LoRA hash).

    Raises ValueError when the file cannot be a safetensors file.
    """
    return _cached(path, "addnet", _addnet, cache)


def autov3(path: str | os.PathLike[str], *, cache: HashCache | None = None) -> str:
    """First 12 hex of :func:`addnet_hash_safetensors`, as in A1111's "Lora hashes"."""
    return addnet_hash_safetensors(path, cache=cache)[:12]
