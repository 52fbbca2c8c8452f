"""The OpenVINO backend (CPU): the graphs of an ``sdrt export --to onnx`` folder compiled by OpenVINO,
each from its OpenVINO IR where the export wrote one (``--openvino-ir``: attention kept as one fused
op, export/openvino_ir.py), else from its ONNX graph.

OpenVINO's CPU plugin is fastest on static shapes, so each graph is reshaped to the input shapes of
the call (a job's size and batch) and compiled once per (graph, shapes); the compiled models are
kept, the least recently used dropped beyond `max_compiled` per graph (an SD UNet's is ~2-3 GB).
The ONNX model is read again for each new shape rather than kept, so its fp32 weights are not held
beside the compiled ones.

Inference precision: "f32", or "bf16" where the CPU has bf16 arithmetic (OpenVINO reports BF16
for avx512_bf16 / AMX). dtype=None picks bf16 where the CPU has it, f32 elsewhere; OpenVINO is
told explicitly, because on bf16 hardware it would otherwise lower fp32 graphs to bf16 on its own.
Everything above the graph runs (calling convention, token lookup, clip skip, SDXL's inputs,
ControlNets exported with the model) is ExportedBackend's, shared with ONNX Runtime.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Optional

import torch

from . import manifests
from .base import BackendCapabilities
from .exported import ExportedBackend, graph_paths, load_token_embeddings, numpy_inputs

MANIFEST = manifests.ONNX
PRECISIONS = {torch.float32: "f32", torch.bfloat16: "bf16"}


def _openvino():
    try:
        import openvino
    except ImportError:
        raise RuntimeError("the openvino backend needs OpenVINO (pip install 'sdrt[openvino]')") from None
    return openvino


def cpu_has_bf16(core) -> bool:
    """Whether OpenVINO's CPU plugin can compute in bf16 on this CPU."""
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def inference_precision(core, dtype: Optional[torch.dtype]) -> str:
    """The INFERENCE_PRECISION_HINT for `dtype` (None: bf16 where the CPU has it, else f32)."""
    if dtype is None:
        return "bf16" if cpu_has_bf16(core) else "f32"
    if dtype not in PRECISIONS:
        raise ValueError(f"dtype={dtype}; the openvino backend computes in fp32 or bf16 (torch.float32, "
                         "torch.bfloat16; leave dtype unset for bf16 where the CPU has it, else fp32)")
    if PRECISIONS[dtype] == "bf16" and not cpu_has_bf16(core):
        raise ValueError(f"dtype={dtype}: this CPU has no bf16 arithmetic (OpenVINO reports "
                         f"{', '.join(core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES'))}); use torch.float32")
    return PRECISIONS[dtype]


class OpenVinoBackend(ExportedBackend):
    name = "openvino"
    # no torch modules: LoRAs are merged before export (sdrt export --lora)
    capabilities = BackendCapabilities(patchable_weights=False, extra_unet_inputs=False, devices=("cpu",))

    def __init__(self, folder: str, *, device: str = "cpu", dtype: Optional[torch.dtype] = None,
                 manifest: dict | None = None, max_compiled: int = 2):
        if str(device) != "cpu":
            raise ValueError(f"device={device!r}; the openvino backend runs on: cpu")
        ov = _openvino()
        self.folder, self.core = folder, ov.Core()
        self.manifest = manifest or manifests.read_manifest(folder, MANIFEST)
        self.precision = inference_precision(self.core, dtype)
        self.max_compiled = max(1, int(max_compiled))
        self.paths = graph_paths(folder, self.manifest, prefer=("openvino_file", "file"))
        self.compiled: dict[str, OrderedDict] = {name: OrderedDict() for name in self.paths}
        # a compiled model's call reuses one infer request, and the cache is evicted in place: one
        # call at a time (OpenVINO already spreads each over all cores)
        self._lock = threading.Lock()
        # text_encoder, and SDXL's text_encoder_2
        self.token_embeddings = load_token_embeddings(folder, self.paths)

    def compiled_for(self, component: str, shapes: dict[str, tuple]):
        """`component` compiled for these static input shapes (cached, least recently used dropped)."""
        cache = self.compiled[component]
        key = tuple(sorted(shapes.items()))
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        model = self.core.read_model(self.paths[component])
        model.reshape({name: list(shape) for name, shape in shapes.items()})
        cache[key] = self.core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": self.precision,
                                                            "PERFORMANCE_HINT": "LATENCY"})
        while len(cache) > self.max_compiled:
            cache.popitem(last=False)
        return cache[key]

    def _run_outputs(self, component: str, like: torch.Tensor, **inputs: torch.Tensor) -> list[torch.Tensor]:
        if component not in self.paths:
            raise self._missing(component, self.paths)
        feed = numpy_inputs(inputs)
        with self._lock:
            compiled = self.compiled_for(component, {name: tuple(value.shape) for name, value in feed.items()})
            results = compiled(feed)  # OpenVINO copies the outputs out of its request buffers
        return [torch.from_numpy(results[output]).float().to(like.device) for output in compiled.outputs]
