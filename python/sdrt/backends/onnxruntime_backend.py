"""The ONNX Runtime backend: the components of an ``sdrt export --to onnx`` folder in ORT sessions.

Same contract as the torch backend: inputs may be torch tensors anywhere; results come back as
float32 torch tensors on the device of the call's main input. The I/O names come from the
export specs (sdrt.export.specs), as the exporter wrote them. Execution providers: CUDA / TensorRT
when the installed onnxruntime has them and `device` asks for CUDA, else CPU.
"""
from __future__ import annotations

import json
import os
from typing import Optional, Sequence

import numpy as np
import torch

MANIFEST = "sdrt_export.json"


def read_manifest(folder: str) -> dict:
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        raise ValueError(f"{folder}: not an sdrt ONNX export (no {MANIFEST}); make one with "
                         "`sdrt export MODEL --to onnx -o DIR`")
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    if manifest.get("format") != 1:
        raise ValueError(f"{path}: export format {manifest.get('format')!r}; this sdrt reads format 1")
    return manifest


def providers_for(device: str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if str(device).startswith("cuda"):
        wanted = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
        if not wanted:
            raise ValueError(f"device={device!r}: this onnxruntime has no CUDA provider (has {', '.join(available)})")
        return wanted + ["CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxRuntimeBackend:
    name = "onnxruntime"
    unet = text_encoder = vae = None  # no torch modules here: run-time LoRA needs the torch backend

    def __init__(self, folder: str, *, device: str = "cpu", manifest: dict | None = None,
                 providers: Optional[Sequence[str]] = None):
        import onnxruntime as ort

        self.folder = folder
        self.manifest = manifest or read_manifest(folder)
        self.providers = list(providers or providers_for(device))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.sessions = {}
        for name, component in self.manifest["components"].items():
            path = os.path.join(folder, component["file"])
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{folder}: component {name} is missing ({component['file']})")
            self.sessions[name] = ort.InferenceSession(path, options, providers=self.providers)
        self.token_embedding = None
        if "text_encoder" in self.sessions:
            self.token_embedding = np.load(os.path.join(folder, "text_encoder", "token_embedding.npy"))

    def _run(self, component: str, like: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        session = self.sessions.get(component)
        if session is None:
            raise ValueError(f"{self.folder}: this export has no {component} (exported: {', '.join(self.sessions)})")
        feed = {name: value.detach().to("cpu", torch.float32).numpy() for name, value in inputs.items()}
        out = session.run(None, feed)[0]
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).to(like.device)

    def unet_forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        t = timestep.reshape(-1).float().expand(x.shape[0]) if timestep.numel() == 1 else timestep.float()
        return self._run("unet", x, sample=x, timestep=t, encoder_hidden_states=context)

    def encode_text(self, ids: torch.Tensor, clip_skip: int = 1, embeddings=None) -> torch.Tensor:
        """Token ids -> hidden states: the token lookup here (textual-inversion vectors replace their
        slots), the transformer in ORT, clip skip N = layer L - N of its per-layer output."""
        layers = int(self.manifest["text_layers"])
        if not 1 <= clip_skip <= layers:
            raise ValueError(f"clip_skip={clip_skip}; this text encoder has {layers} layers")
        embeds = torch.from_numpy(self.token_embedding[ids.cpu().numpy()].astype(np.float32))
        for row, slots in enumerate(embeddings or []):
            for slot in slots:
                embeds[row, slot.offset:slot.offset + slot.vectors.shape[0]] = slot.vectors.float()
        hidden = self._run("text_encoder", ids, inputs_embeds=embeds)
        return hidden[layers - clip_skip]

    def vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self._run("vae_decoder", latents, latent=latents)

    def vae_encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._run("vae_encoder", pixels, image=pixels)
