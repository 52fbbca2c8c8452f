"""The TensorRT backend: engines built from an ONNX export (sdrt.export.tensorrt_export), run on
static CUDA buffers, replayed as CUDA graphs per input shape.

NOT exercised in this project: TensorRT cannot be installed on its machines (no GPU in CI; the
wheel is too large for the lent GPU machine). Written against the documented TensorRT 10 Python
API (IExecutionContext.set_input_shape / set_tensor_address / execute_async_v3) and torch's CUDA
graphs; everything it shares with the ONNX Runtime backend (backends/exported.py: the contract,
I/O names from the export specs, token lookup, clip skip, profile checks) is tested through that.
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from . import manifests
from .base import BackendCapabilities
from .exported import ExportedBackend, check_in_profile, exported_graphs, load_token_embeddings

MANIFEST = manifests.TENSORRT


def _tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise RuntimeError("the tensorrt backend needs TensorRT (pip install 'sdrt[tensorrt]' with an NVIDIA GPU)") \
            from None
    return trt


class _Engine:
    """One engine with its context; inputs copied into static buffers, and one CUDA graph per
    distinct set of input shapes (TensorRT may not be captured while its shapes change)."""

    def __init__(self, path: str, profile: dict, device: torch.device, use_cuda_graphs: bool):
        trt = _tensorrt()
        with open(path, "rb") as f:
            self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise RuntimeError(f"{path}: TensorRT could not load this engine (built by another TensorRT or GPU?)")
        self.context = self.engine.create_execution_context()
        self.name, self.profile, self.device = os.path.basename(os.path.dirname(path)), profile, device
        self.use_cuda_graphs = use_cuda_graphs
        self.stream = torch.cuda.Stream(device=device)
        self.graphs: dict[tuple, tuple] = {}  # shapes -> (graph, inputs, outputs)

    def __call__(self, inputs: dict[str, torch.Tensor], output_names: list[str]) -> list[torch.Tensor]:
        shapes = {k: tuple(v.shape) for k, v in inputs.items()}
        check_in_profile(self.profile, shapes, engine=self.name)
        key = tuple(sorted(shapes.items()))
        if key not in self.graphs:
            self.graphs[key] = self._prepare(shapes, output_names)
        graph, static_in, static_out = self.graphs[key]
        for name, value in inputs.items():
            static_in[name].copy_(value.to(static_in[name].dtype), non_blocking=True)
        with torch.cuda.stream(self.stream):
            if graph is not None:
                graph.replay()
            else:
                self.context.execute_async_v3(self.stream.cuda_stream)
        self.stream.synchronize()
        return [static_out[n] for n in output_names]

    def _prepare(self, shapes: dict, output_names: list[str]):
        trt = _tensorrt()
        static_in, static_out = {}, {}
        for name, shape in shapes.items():
            self.context.set_input_shape(name, shape)
            dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(name))
            static_in[name] = torch.empty(shape, dtype=dtype, device=self.device)
            self.context.set_tensor_address(name, static_in[name].data_ptr())
        for name in output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(name))
            static_out[name] = torch.empty(shape, dtype=dtype, device=self.device)
            self.context.set_tensor_address(name, static_out[name].data_ptr())
        graph = None
        if self.use_cuda_graphs:
            with torch.cuda.stream(self.stream):
                self.context.execute_async_v3(self.stream.cuda_stream)  # warm-up outside the capture
            self.stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self.stream):
                self.context.execute_async_v3(self.stream.cuda_stream)
        return graph, static_in, static_out


def _torch_dtype(trt, dtype):
    return {trt.float32: torch.float32, trt.float16: torch.float16, trt.int64: torch.int64,
            trt.int32: torch.int32, trt.bfloat16: torch.bfloat16}[dtype]


class TensorRTBackend(ExportedBackend):
    name = "tensorrt"
    # run-time LoRA: refit the engines instead (sdrt.export.tensorrt_export.refit_engine)
    capabilities = BackendCapabilities(patchable_weights=False, extra_unet_inputs=False, devices=("cuda",))

    def __init__(self, folder: str, *, device: str = "cuda", use_cuda_graphs: bool = True):
        if not str(device).startswith("cuda") or not torch.cuda.is_available():
            raise ValueError(f"device={device!r}: the tensorrt backend runs on a CUDA GPU")
        self.folder = folder
        self.manifest = manifests.read_manifest(folder, MANIFEST)
        self.device = torch.device(device)
        self.engines = {name: _Engine(os.path.join(folder, c["engine"]), _profile(c["profile"]), self.device,
                                      use_cuda_graphs) for name, c in exported_graphs(self.manifest).items()}
        self.token_embeddings = load_token_embeddings(folder, self.engines, self.device)

    def _run_outputs(self, component: str, like: torch.Tensor, **inputs: torch.Tensor) -> list[torch.Tensor]:
        engine: Optional[_Engine] = self.engines.get(component)
        if engine is None:
            raise self._missing(component, self.engines)
        outputs = self._entry(component)["outputs"]
        feed = {k: v.to(self.device) for k, v in inputs.items()}
        return [out.to(like.device, torch.float32, copy=True) for out in engine(feed, outputs)]


def _profile(stored: dict) -> dict:
    return {name: tuple(tuple(shape) for shape in triple) for name, triple in stored.items()}
