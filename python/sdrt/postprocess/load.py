"""Loading an upscaler model file: ``load_upscaler_file(path) -> UpscalerModel``.

State-dict files (``.pth .pt .ckpt .bin .safetensors``) are read only through sdrt's safe readers
(:func:`sdrt.loaders.safe_pickle.load_pickle`, torch's restricted unpickler; the validated
safetensors reader), unwrapped from Real-ESRGAN's ``params_ema`` / ``params``, recognised by
:func:`sdrt.postprocess.upscaler_layouts.detect_layout` and loaded into sdrt's own network
(``strict=True``: every key and shape is checked). ``.onnx`` files run on ONNX Runtime.

The returned model maps (N, C, H, W) float pixels in [0, 1] to (N, C, scale*H, scale*W), untiled,
unclamped (the network's own output); :func:`sdrt.postprocess.tiling.upscale_tiled` tiles, picks
the precision and clamps.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from sdrt.loaders.state_dict import (
    PICKLE_EXTENSIONS,
    SAFETENSORS_EXTENSIONS,
    ModelFileError,
    PathLike,
    existing_file,
    read_state_dict,
    unwrap_state_dict,
)

from .esrgan_nets import RRDBNet, SRVGGNetCompact
from .upscaler_layouts import (
    LAYOUTS,
    UpscalerFileError,
    UpscalerSpec,
    detect_layout,
    unwrap_upscaler_checkpoint,
)

__all__ = ["UpscalerModel", "UPSCALER_EXTENSIONS", "load_upscaler_file", "read_upscaler_state_dict",
           "build_upscaler"]

ONNX_EXTENSIONS = (".onnx",)
UPSCALER_EXTENSIONS = PICKLE_EXTENSIONS + SAFETENSORS_EXTENSIONS + ONNX_EXTENSIONS
_NETWORKS = {"RRDBNet": RRDBNet, "SRVGGNetCompact": SRVGGNetCompact}


@runtime_checkable
class UpscalerModel(Protocol):
    """What :func:`load_upscaler_file` returns: a callable torch module with these attributes.

    ``scale``: the integer upscaling factor; ``layout``: the file's layout ("RRDBNet",
    "ESRGAN (old arch)", "ESRGAN (RRDB_trunk)", "SRVGGNetCompact", "ONNX"); ``size_multiple``:
    inputs are padded internally to multiples of it (1, or 2 / 4 for pixel-unshuffling nets) and
    tiles should start on multiples of it."""

    scale: int
    layout: str
    size_multiple: int

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor: ...


def load_upscaler_file(path: PathLike, *, device: str | torch.device = "cpu",
                       dtype: torch.dtype | None = None) -> UpscalerModel:
    """Load an upscaler from a user's file (no download, no code from the file ever runs).

    `dtype` sets the weights' precision (default float32 whatever the file stores); ONNX models run
    in their graph's own precision and ignore it. Every failure is an :class:`UpscalerFileError`
    (a ValueError) whose message starts with the file path; a file of no known layout says which
    layouts were tried and why each did not match."""
    p = existing_file(path)
    suffix = p.suffix.lower()
    if suffix not in UPSCALER_EXTENSIONS:
        raise UpscalerFileError(p, f"unsupported upscaler file extension {suffix or '(none)'!r}; "
                                   f"supported: {', '.join(UPSCALER_EXTENSIONS)}")
    if suffix in ONNX_EXTENSIONS:
        from .onnx_upscaler import OnnxUpscaler

        return OnnxUpscaler(p, device=device)
    spec = detect_layout(read_upscaler_state_dict(p), p)
    model = build_upscaler(spec, p)
    model.to(device=device, dtype=dtype or torch.float32)
    model.path, model.name = str(p), p.stem
    return model


def read_upscaler_state_dict(path: PathLike) -> dict[str, torch.Tensor]:
    """The flat tensor dict of an upscaler file, unwrapped from ``params_ema`` (preferred) or
    ``params``; read only by sdrt's safe readers. Unreadable files raise UpscalerFileError."""
    p = Path(path)
    try:
        if p.suffix.lower() in SAFETENSORS_EXTENSIONS:
            return read_state_dict(p)
        from sdrt.loaders.safe_pickle import load_pickle

        return unwrap_state_dict(p, unwrap_upscaler_checkpoint(load_pickle(p)))
    except UpscalerFileError:
        raise
    except ModelFileError as e:
        raise UpscalerFileError(e.path, f"{e.problem} (expected an upscaler: one of "
                                        f"{', '.join(LAYOUTS)}, or an .onnx model)", e.key) from e


def build_upscaler(spec: UpscalerSpec, path: PathLike = "<state dict>") -> torch.nn.Module:
    """sdrt's network for `spec`, its weights loaded strictly, in eval mode without gradients.
    A key or shape the layout does not account for is an UpscalerFileError naming the file.

    The network is built on the meta device and takes the state dict's tensors as its parameters
    (no copy, no random initialisation: a 23-block RRDBNet would spend a second on it)."""
    try:
        with torch.device("meta"):
            model = _NETWORKS[spec.network](**spec.params)
    except ValueError as e:
        raise UpscalerFileError(path, f"{spec.layout} with unsupported hyper-parameters: {e}") from e
    expected = model.state_dict()
    missing = [k for k in expected if k not in spec.state_dict]
    unexpected = [k for k in spec.state_dict if k not in expected]
    if missing or unexpected:
        raise UpscalerFileError(path, f"looks like {spec.layout} {spec.params} but keys are missing "
                                      f"{missing[:4]} or unexpected {unexpected[:4]}")
    for key, tensor in spec.state_dict.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise UpscalerFileError(path, f"shape {tuple(tensor.shape)} does not fit {spec.layout} "
                                          f"{spec.params} (needs {tuple(expected[key].shape)})", key)
    model.load_state_dict(spec.state_dict, strict=True, assign=True)
    model.layout = spec.layout
    return model.eval().requires_grad_(False)
