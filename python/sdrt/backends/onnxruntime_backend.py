"""The ONNX Runtime backend: the components of an ``sdrt export --to onnx`` folder in ORT sessions.

Inputs may be torch tensors anywhere; results come back as float32 torch tensors on the device of
the call's main input. The calling convention (I/O names, token lookup, clip skip, SDXL's text
features and added UNet inputs) is the export specs', shared with the TensorRT backend in
backends/exported.py. ControlNets exported with the model (``sdrt export --controlnet``) run as
their own sessions. Execution providers: CUDA / TensorRT when the installed onnxruntime has
them and `device` asks for CUDA, else CPU.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from . import manifests
from .base import BackendCapabilities
from .exported import ExportedBackend, graph_paths, load_token_embeddings, numpy_inputs

MANIFEST = manifests.ONNX


def read_manifest(folder: str) -> dict:
    return manifests.read_manifest(folder, MANIFEST)


def providers_for(device: str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if str(device).startswith("cuda"):
        wanted = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
        if not wanted:
            raise ValueError(f"device={device!r}: this onnxruntime has no CUDA provider (has {', '.join(available)})")
        return wanted + ["CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxRuntimeBackend(ExportedBackend):
    name = "onnxruntime"
    # no torch modules: LoRAs are merged before export (sdrt export --lora)
    capabilities = BackendCapabilities(patchable_weights=False, extra_unet_inputs=False, devices=("cpu", "cuda"))

    def __init__(self, folder: str, *, device: str = "cpu", manifest: dict | None = None,
                 providers: Optional[Sequence[str]] = None):
        import onnxruntime as ort

        self.folder = folder
        self.manifest = manifest or read_manifest(folder)
        self.providers = list(providers or providers_for(device))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.sessions = {name: ort.InferenceSession(path, options, providers=self.providers)
                         for name, path in graph_paths(folder, self.manifest).items()}
        # text_encoder, and SDXL's text_encoder_2
        self.token_embeddings = load_token_embeddings(folder, self.sessions)

    def _run_outputs(self, component: str, like: torch.Tensor, **inputs: torch.Tensor) -> list[torch.Tensor]:
        session = self.sessions.get(component)
        if session is None:
            raise self._missing(component, self.sessions)
        feed = numpy_inputs(inputs)
        return [torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).to(like.device)
                for out in session.run(None, feed)]
