"""sdrt.postprocess: what runs on decoded images. Model upscalers now (the ESRGAN family written in
sdrt with the published key names, and ``.onnx`` upscalers on ONNX Runtime); face restore and swap
belong here too.

    model = load_upscaler_file("RealESRGAN_x4plus.pth")         # .pth .pt .ckpt .safetensors .onnx
    big = upscale_tiled(model, pixels, tile=192, overlap=8)      # (N, 3, H, W) [0, 1] -> x model.scale

Names resolve on first use, so importing this package loads neither onnx nor onnxruntime.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .esrgan_nets import RRDBNet, SRVGGNetCompact
    from .load import UPSCALER_EXTENSIONS, UpscalerModel, build_upscaler, load_upscaler_file
    from .onnx_upscaler import OnnxUpscaler, export_upscaler_onnx
    from .tiling import upscale_tiled
    from .upscaler_layouts import (
        LAYOUTS,
        UnknownUpscalerLayout,
        UpscalerFileError,
        UpscalerSpec,
        detect_layout,
    )

_LAZY = {
    "load_upscaler_file": "load", "build_upscaler": "load", "UpscalerModel": "load",
    "UPSCALER_EXTENSIONS": "load",
    "upscale_tiled": "tiling",
    "export_upscaler_onnx": "onnx_upscaler", "OnnxUpscaler": "onnx_upscaler",
    "detect_layout": "upscaler_layouts", "LAYOUTS": "upscaler_layouts", "UpscalerSpec": "upscaler_layouts",
    "UpscalerFileError": "upscaler_layouts", "UnknownUpscalerLayout": "upscaler_layouts",
    "RRDBNet": "esrgan_nets", "SRVGGNetCompact": "esrgan_nets",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
