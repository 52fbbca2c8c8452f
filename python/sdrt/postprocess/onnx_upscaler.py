"""Upscalers on ONNX Runtime: export sdrt's upscaler networks to ``.onnx`` and run ``.onnx``
upscalers (sdrt's or other tools') with the same contract as the torch modules.

Export follows sdrt.export's conventions: torch's TorchScript-based exporter (``dynamo=False``),
opset ``sdrt.export.onnx_export.OPSET``, named inputs/outputs with dynamic axes, checked with
onnx.checker. The graph is the network's ``forward_core``: the padding of odd sides for
pixel-unshuffling nets stays outside, in :class:`OnnxUpscaler`, which reads the facts it needs
(scale, size multiple, layout) from the model's metadata (``sdrt.upscaler.*``) and, for files from
elsewhere, measures the scale by running a tiny input.
"""
from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from sdrt.loaders.state_dict import PathLike

from .esrgan_nets import pad_to_multiple
from .upscaler_layouts import UpscalerFileError

__all__ = ["export_upscaler_onnx", "OnnxUpscaler", "INPUT_NAME", "OUTPUT_NAME"]

INPUT_NAME, OUTPUT_NAME = "image", "upscaled"
META_PREFIX = "sdrt.upscaler."
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


class _Core(torch.nn.Module):
    """The traced part: the network on inputs whose sides are multiples of size_multiple."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.forward_core(image)


def export_upscaler_onnx(model: torch.nn.Module, path: PathLike) -> str:
    """Write `model` (an sdrt upscaler network, e.g. from load_upscaler_file) to `path` as ONNX
    with input ``image`` (N, C, H, W) and output ``upscaled``, N/H/W dynamic, fp32 weights, and its
    scale / size multiple / layout as metadata. Returns the path."""
    import onnx

    from sdrt.export.onnx_export import OPSET

    if not hasattr(model, "forward_core"):
        raise TypeError(f"export_upscaler_onnx: {type(model).__name__} is not an sdrt upscaler network "
                        "(RRDBNet or SRVGGNetCompact, as load_upscaler_file returns for state-dict files)")
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    channels = model.conv_first.in_channels // model.size_multiple**2 if hasattr(model, "conv_first") \
        else model.body[0].in_channels
    side = 8 * model.size_multiple
    sample = torch.rand(1, channels, side, side)
    if any(p.dtype != torch.float32 for p in model.parameters()):
        model = copy.deepcopy(model).float()  # export in fp32 without changing the caller's model
    core = _Core(model).eval()
    dynamic = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer chatter
        torch.onnx.export(core, (sample,), path, dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: dynamic, OUTPUT_NAME: dynamic})
    proto = onnx.load(path)
    facts = {"scale": model.scale, "size_multiple": model.size_multiple,
             "layout": getattr(model, "layout", type(model).__name__)}
    for key, value in facts.items():
        proto.metadata_props.add(key=META_PREFIX + key, value=str(value))
    onnx.save_model(proto, path)
    onnx.checker.check_model(path)
    return path


class OnnxUpscaler(torch.nn.Module):
    """An ``.onnx`` upscaler on ONNX Runtime, called like the torch networks: (N, C, H, W) float
    in [0, 1] -> float32 (N, C, scale*H, scale*W) on the input's device. Attributes ``scale``,
    ``size_multiple``, ``layout`` ("ONNX"), ``path``, ``name``; ``fixed_size`` (H, W) for graphs
    with static sides (inputs up to that size are padded to it; upscale_tiled tiles to it)."""

    layout = "ONNX"

    def __init__(self, path: PathLike, *, device: str | torch.device = "cpu", providers=None) -> None:
        super().__init__()
        import onnxruntime as ort

        from sdrt.backends.onnxruntime_backend import providers_for

        self.path, self.name = os.fspath(path), Path(path).stem
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = torch.get_num_threads()  # the same thread budget as torch
        try:
            self.session = ort.InferenceSession(self.path, options,
                                                providers=list(providers or providers_for(str(device))))
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types for bad files
            raise UpscalerFileError(path, f"ONNX Runtime cannot load it: {type(e).__name__}: {e}") from e
        self._read_io()
        meta = self.session.get_modelmeta().custom_metadata_map
        self.size_multiple = int(meta.get(META_PREFIX + "size_multiple", 1))
        self.source_layout = meta.get(META_PREFIX + "layout")
        self.scale = int(meta[META_PREFIX + "scale"]) if META_PREFIX + "scale" in meta else self._probe_scale()

    def _read_io(self) -> None:
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1 or len(inputs[0].shape) != 4:
            shapes = [(i.name, i.shape) for i in inputs]
            raise UpscalerFileError(self.path, f"not an image upscaler graph: expected one (N, C, H, W) "
                                               f"input, found inputs {shapes}")
        info = inputs[0]
        self.input_name, self.input_type = info.name, _ORT_TYPES.get(info.type)
        if self.input_type is None:
            raise UpscalerFileError(self.path, f"input {info.name!r} has type {info.type}; expected float")
        batch, self.channels, h, w = info.shape
        self.channels = self.channels if isinstance(self.channels, int) else 3
        self.fixed_batch = batch if isinstance(batch, int) else None
        self.fixed_size = (h, w) if isinstance(h, int) and isinstance(w, int) else None

    def _probe_scale(self) -> int:
        """The scale of a graph without sdrt's metadata, from the output of a tiny input."""
        h, w = self.fixed_size or (16, 16)
        probe = np.zeros((self.fixed_batch or 1, self.channels, h, w), self.input_type)
        out_h, out_w = self.session.run(None, {self.input_name: probe})[0].shape[-2:]
        if out_h % h or out_w % w or out_h // h != out_w // w:
            raise UpscalerFileError(self.path, f"a {h}x{w} input gave a {out_h}x{out_w} output: "
                                               "not an integer upscale")
        return out_h // h

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        h, w = pixels.shape[-2:]
        x = pad_to_multiple(pixels.detach().to("cpu", torch.float32), self.size_multiple)
        if self.fixed_size:
            x = self._pad_to_fixed(x)
        feed = x.numpy().astype(self.input_type, copy=False)
        if self.fixed_batch == 1 and feed.shape[0] > 1:
            out = np.concatenate([self.session.run(None, {self.input_name: feed[i:i + 1]})[0]
                                  for i in range(feed.shape[0])])
        else:
            out = self.session.run(None, {self.input_name: feed})[0]
        out = torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))
        return out[..., : h * self.scale, : w * self.scale].to(pixels.device)

    def _pad_to_fixed(self, x: torch.Tensor) -> torch.Tensor:
        (fh, fw), (h, w) = self.fixed_size, x.shape[-2:]
        if h > fh or w > fw:
            raise ValueError(f"{self.path}: the graph takes {fh}x{fw} inputs, got {h}x{w}; run it "
                             f"through upscale_tiled, which tiles to that size")
        mode = "reflect" if fh - h < h and fw - w < w else "replicate"
        return torch.nn.functional.pad(x, (0, fw - w, 0, fh - h), mode=mode)
