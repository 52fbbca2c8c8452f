"""ONNX Runtime plumbing of the ONNX preprocessors (depth_onnx, seg_onnx, dwpose): sessions kept
per file, the files' inputs and outputs checked against what the preprocessor feeds and reads."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..annotators import MissingAnnotatorError, annotator_file, cached


class OnnxSignatureError(ValueError):
    """An ONNX annotator file whose inputs / outputs are not what its preprocessor feeds / reads."""


@dataclass(frozen=True)
class IOSpec:
    """One tensor sdrt expects: its rank and the dimensions it pins (index -> size; dynamic or
    symbolic dimensions in the file always pass), with a human description for the error."""
    rank: Sequence[int]
    dims: tuple[tuple[int, int], ...] = ()
    float_only: bool = True
    text: str = ""

    def mismatch(self, arg) -> Optional[str]:
        shape = list(arg.shape or [])
        if len(shape) not in tuple(self.rank):
            return f"rank {len(shape)} (shape {shape})"
        for index, size in self.dims:
            got = shape[index] if -len(shape) <= index < len(shape) else None
            if isinstance(got, int) and got > 0 and got != size:
                return f"shape {shape}"
        if self.float_only and arg.type not in ("tensor(float)", "tensor(float16)", "tensor(double)"):
            return f"type {arg.type}"
        return None


def _providers() -> list[str]:
    import onnxruntime as ort
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def check_signature(session, path: str, inputs: Sequence[IOSpec], outputs: Sequence[IOSpec]) -> None:
    """Raise OnnxSignatureError naming the file when its first inputs / outputs do not match."""
    for what, args, specs in (("input", session.get_inputs(), inputs), ("output", session.get_outputs(), outputs)):
        if len(args) < len(specs):
            raise OnnxSignatureError(f"{path}: has {len(args)} {what}(s), this preprocessor needs {len(specs)}: "
                                     + "; ".join(s.text for s in specs))
        for i, (arg, spec) in enumerate(zip(args, specs)):
            bad = spec.mismatch(arg)
            if bad:
                raise OnnxSignatureError(f"{path}: {what} {i} ({arg.name!r}) has {bad}; expected {spec.text} "
                                         f"(see the module docstring of {__name__.rsplit('.', 1)[0]} for how to "
                                         f"export it)")


def find_file(folders, subfolder: str, filenames: Sequence[str]) -> str:
    """The first of `filenames` present in the annotator subfolder; none -> MissingAnnotatorError
    naming the first (and the alternatives) and the folder."""
    first = None
    for name in filenames:
        try:
            return annotator_file(folders, subfolder, name)
        except MissingAnnotatorError as e:
            first = first or e
    others = ", ".join(filenames[1:])
    raise MissingAnnotatorError(f"{first} (or name it {others})" if others else str(first))


def onnx_session(path: str, inputs: Sequence[IOSpec], outputs: Sequence[IOSpec]):
    """An ONNX Runtime session of `path` (CUDA when available), its signature checked; kept between calls."""
    def build(p: str):
        import onnxruntime as ort
        try:
            session = ort.InferenceSession(p, providers=_providers())
        except Exception as e:  # onnxruntime raises its own types for unreadable files
            raise OnnxSignatureError(f"{p}: ONNX Runtime cannot load it ({e})") from e
        check_signature(session, p, inputs, outputs)
        return session
    return cached(path, build)


def fixed_hw(arg) -> Optional[tuple[int, int]]:
    """(H, W) when the file pins both spatial dimensions of an NCHW input, else None."""
    h, w = list(arg.shape)[2:4]
    return (h, w) if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0 else None


def input_dtype(arg):
    return np.float16 if arg.type == "tensor(float16)" else np.float64 if arg.type == "tensor(double)" else np.float32
