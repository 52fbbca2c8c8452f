"""sdrt.export: the export stage. A loaded model (``sdrt.load(...)``) -> files another runtime runs.

- ``to_onnx(pipe, out_dir, *, fp16=False, ...)``: ONNX graphs for the onnxruntime backend;
- ``to_tensorrt(onnx_dir, out_dir, ...)``: TensorRT engines built from such an ONNX export;
- ``to_coreml(pipe, out_dir, ...)``: Core ML packages for Apple Silicon.

Installed from the repository's top-level ``export/`` folder as ``sdrt.export``. The exporters are
resolved on first use, so importing this package loads none of onnx, onnxruntime, coremltools or
tensorrt (each is optional and slow or noisy to import); ``specs`` declares the components' I/O
that all of them share.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .coreml_export import to_coreml
    from .onnx_export import to_onnx
    from .tensorrt_export import to_tensorrt

_EXPORTERS = {"to_onnx": "onnx_export", "to_tensorrt": "tensorrt_export", "to_coreml": "coreml_export"}

__all__ = list(_EXPORTERS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTERS:
        return getattr(importlib.import_module(f".{_EXPORTERS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTERS))
