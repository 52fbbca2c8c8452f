"""Loading pickled model files (``.ckpt .pt .pth .bin``) without running code from them.

Everything goes through torch's restricted unpickler (``torch.load(weights_only=True)``), which
only rebuilds tensors, containers and primitive values and refuses any other global. There is no
fallback to unrestricted unpickling: a refused file is reported and not loaded.

Before torch sees a file, its container is checked: a torch zip archive must hold only the
members ``torch.save`` writes, under one top-level folder; anything else (code files, absolute or
``..`` paths, a second folder) is refused. Legacy (torch < 1.6) pickles are passed to the same
restricted unpickler.

A few harmless globals that torch refuses by default but real files contain are allow-listed for
the duration of a load (see :func:`extra_safe_globals`).
"""
from __future__ import annotations

import pickle
import re
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sdrt.loaders.state_dict import ModelFileError, PathLike, existing_file

__all__ = ["load_pickle", "check_torch_zip", "extra_safe_globals"]

ZIP_MAGIC = b"PK\x03\x04"
# torch.save pickles with protocol 2; later protocols are accepted since they are just as
# restricted once they reach the weights-only unpickler.
PICKLE_PROTO_OPCODE = 0x80

# Members torch.save writes below the archive folder (checked against torch 2.13, which writes
# data.pkl, .format_version, .storage_alignment, byteorder, data/<n>, version and
# .data/serialization_id; older releases write a subset; .data/version is the record name some
# releases of the C++ stream writer use for the version).
_TORCH_ZIP_MEMBER = re.compile(
    r"data\.pkl|version|byteorder|\.format_version|\.storage_alignment"
    r"|\.data/serialization_id|\.data/version|data/[0-9]+"
)

# torch's safe-globals registry is process-global and the context manager removes on exit what
# it added on entry; serialising our loads keeps one load's exit from stripping another's list.
_LOAD_LOCK = threading.Lock()


def load_pickle(path: PathLike) -> object:
    """Unpickle a torch file with torch's restricted (weights-only) unpickler, on the CPU.

    Zip archives are checked by :func:`check_torch_zip` and memory-mapped; legacy pickles are read
    normally (torch cannot mmap them). Any refusal or read failure is a ModelFileError naming the
    file; a refused global is named in the message."""
    p = existing_file(path)
    kind = _container_kind(p)
    if kind == "zip":
        check_torch_zip(p)
    return _restricted_load(p, mmap=kind == "zip")


def _container_kind(path: Path) -> str:
    """``"zip"`` or ``"legacy"``, from the first bytes (not the extension, which users rename)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(ZIP_MAGIC):
        return "zip"
    if len(head) >= 2 and head[0] == PICKLE_PROTO_OPCODE and 2 <= head[1] <= 5:
        return "legacy"
    if not head:
        raise ModelFileError(path, "file is empty")
    raise ModelFileError(
        path, "not a PyTorch file (neither a torch zip archive nor a torch pickle)"
    )


# --------------------------------------------------------------------------------------------
# zip container check
# --------------------------------------------------------------------------------------------


def check_torch_zip(path: PathLike) -> str:
    """Check that ``path`` is a complete zip archive laid out as ``torch.save`` writes it, and
    return its top-level folder name. Raises ModelFileError naming the first offending member."""
    p = Path(path)
    file_size = p.stat().st_size
    try:
        with zipfile.ZipFile(p) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        # A torch zip keeps its directory at the very end, so a cut download lands here.
        raise ModelFileError(p, f"not a complete zip archive (truncated download?): {e}") from None
    if not infos:
        raise ModelFileError(p, "zip archive is empty")
    roots: set[str] = set()
    seen: set[str] = set()
    for info in infos:
        name = info.filename
        if name in seen:
            raise ModelFileError(p, "zip member appears twice", name)
        seen.add(name)
        roots.add(_check_member_name(p, name))
        if info.header_offset + info.compress_size > file_size:
            raise ModelFileError(p, "zip member's data lies beyond the end of the file", name)
    if len(roots) != 1:
        raise ModelFileError(p, f"zip archive has several top-level folders: {sorted(roots)}")
    (root,) = roots
    if f"{root}/data.pkl" not in seen:
        raise ModelFileError(p, f"zip archive has no {root}/data.pkl (not a torch.save file)")
    return root


def _check_member_name(path: Path, name: str) -> str:
    """The member's top-level folder, after refusing names torch.save never writes."""
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts):
        raise ModelFileError(path, "unsafe zip member path (absolute, '..' or empty part)", name)
    if len(parts) < 2 or not _TORCH_ZIP_MEMBER.fullmatch("/".join(parts[1:])):
        raise ModelFileError(
            path,
            "unexpected zip member: a torch archive holds only <folder>/data.pkl, data/<n>, "
            "version, byteorder and torch's small metadata records",
            name,
        )
    return parts[0]


# --------------------------------------------------------------------------------------------
# restricted load
# --------------------------------------------------------------------------------------------


def _restricted_load(path: Path, *, mmap: bool) -> object:
    try:
        with _LOAD_LOCK, torch.serialization.safe_globals(extra_safe_globals()):
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        refused = _refused_global(str(e))
        raise ModelFileError(
            path,
            f"refused by the restricted unpickler ({refused}); the file may contain code "
            "and was not loaded",
        ) from None
    except Exception as e:  # noqa: BLE001 - a corrupt pickle can raise nearly any error type
        raise ModelFileError(
            path, f"could not be read as a PyTorch file: {type(e).__name__}: {e}"
        ) from e


_REFUSAL_PATTERNS = (
    re.compile(r"GLOBAL (\S+) was not an allowed global"),
    re.compile(r"unsupported GLOBAL (\S+) whose module"),
    re.compile(r"unrecognized function (.+?)(?: which belongs|$)", re.MULTILINE),
    re.compile(r"allowlisted via `add_safe_globals`,? but got (.+?)$", re.MULTILINE),
)


def _refused_global(message: str) -> str:
    """The global torch refused, as ``global 'module.name'``, else torch's own reason."""
    for pattern in _REFUSAL_PATTERNS:
        m = pattern.search(message)
        if m:
            name = m.group(1).rstrip(".")
            # torch strips "builtins." from the names it reports; put it back for clarity.
            if "." not in name and not name.startswith("<"):
                name = f"builtins.{name}"
            return f"global {name!r}"
    m = re.search(r"WeightsUnpickler error:\s*(.+)", message)
    return (m.group(1) if m else message.strip().splitlines()[-1]).strip()


# --------------------------------------------------------------------------------------------
# the extra allow-list
# --------------------------------------------------------------------------------------------

# numpy's scalar reconstructor: numpy 2 pickles name it numpy._core.multiarray.scalar, numpy 1
# numpy.core.multiarray.scalar (files from before 2024 carry that name).
try:
    from numpy._core.multiarray import scalar as _np_scalar
except ImportError:  # numpy < 2
    from numpy.core.multiarray import scalar as _np_scalar  # type: ignore[no-redef]

# Plain numeric and bool kinds; object ('O'), structured/void, string and datetime dtypes are
# refused so numpy can never be asked to interpret file bytes as object pointers.
_PLAIN_KINDS = "biufc"


def _is_plain_dtype(dt: object) -> bool:
    return (
        isinstance(dt, np.dtype)
        and dt.kind in _PLAIN_KINDS
        and dt.fields is None
        and dt.subdtype is None
        and not dt.hasobject
    )


def _numpy_dtype(spec: object, align: object = False, copy: object = False) -> np.dtype:
    """Stand-in for ``numpy.dtype`` during a load: only plain numeric/bool dtype strings."""
    if not isinstance(spec, str):
        raise pickle.UnpicklingError(f"numpy dtype from {type(spec).__name__} is not allowed")
    dt = np.dtype(spec, align=bool(align), copy=bool(copy))
    if not _is_plain_dtype(dt):
        raise pickle.UnpicklingError(f"numpy dtype {spec!r} is not allowed (not plain numeric)")
    return dt


def _numpy_scalar(dtype: object, data: object = None) -> Any:
    """Stand-in for numpy's scalar reconstructor: a plain numeric scalar from its exact bytes."""
    if not _is_plain_dtype(dtype):
        raise pickle.UnpicklingError(f"numpy scalar of dtype {dtype!r} is not allowed")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise pickle.UnpicklingError("numpy scalar data does not match its dtype's size")
    return _np_scalar(dtype, data)


_LIGHTNING_MODEL_CHECKPOINT = "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"


class LightningCallbackPlaceholder:
    """Stands in for ``pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint``.

    Lightning-trained checkpoints (the original SD 1.x ``.ckpt`` files among them) store callback
    state in a dict keyed by the callback class, so the class is referenced as a global even though
    no weight depends on it. This inert class takes its place (pytorch_lightning is not needed and
    none of its code runs); its instances keep no state. The entry is dropped with the other
    non-weight entries when the weights are unwrapped."""

    def __new__(cls, *args: object, **kwargs: object) -> LightningCallbackPlaceholder:
        return super().__new__(cls)

    def __setstate__(self, state: object) -> None:
        pass  # the state is training bookkeeping; discard it


def extra_safe_globals() -> list[Callable[..., Any] | tuple[Callable[..., Any], str]]:
    """The globals allowed on top of torch's default weights-only list, each needed because torch
    2.13 refuses it by default and real model files contain it:

    * ``numpy.core.multiarray.scalar`` / ``numpy._core.multiarray.scalar`` -> :func:`_numpy_scalar`:
      numpy scalars (e.g. ``"step": np.int64(...)`` in older textual-inversion embeddings);
      restricted to plain numeric dtypes and exact-size byte strings.
    * ``numpy.dtype`` -> :func:`_numpy_dtype`: the dtype argument of such a scalar, from a dtype
      string, plain numeric kinds only.
    * ``numpy.dtypes.<Kind>DType`` for those plain kinds: the pickle BUILDs the rebuilt dtype with
      its state, which torch allows only for allow-listed types; ``dtype.__setstate__`` only
      restores byte order and flags.
    * ``pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint`` ->
      :class:`LightningCallbackPlaceholder` (see there).

    Not allowed (torch refuses them, and they stay refused): numpy arrays (``_reconstruct`` /
    ``ndarray``), any other class or function. ``torch._utils._rebuild_parameter`` (Parameters in
    old embeddings) and ``collections.OrderedDict`` are already on torch's default list."""
    allowed: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = [
        (_numpy_scalar, "numpy.core.multiarray.scalar"),
        (_numpy_scalar, "numpy._core.multiarray.scalar"),
        (_numpy_dtype, "numpy.dtype"),
        (LightningCallbackPlaceholder, _LIGHTNING_MODEL_CHECKPOINT),
    ]
    # Every platform class a plain dtype string can resolve to ('i8' is LongDType on Linux).
    plain = {np.dtype(code) for code in np.typecodes["All"]}
    for dtype_class in sorted({type(dt) for dt in plain if _is_plain_dtype(dt)}, key=str):
        allowed.append((dtype_class, f"numpy.dtypes.{dtype_class.__name__}"))
    return allowed
