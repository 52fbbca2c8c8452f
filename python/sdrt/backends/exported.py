"""What the backends that run exported graphs (ONNX Runtime, TensorRT) share: the calling
convention of the export specs (sdrt.export.specs), the token lookup outside the text encoder
graph, clip skip, and the shape-range check of engines.

The text encoder graph takes token embeddings, not ids, so textual-inversion vectors can replace
their slots before it runs, and returns the final-layer-normed hidden state of every layer, so
clip skip is a row index rather than a second graph. A subclass only says how one component runs
(`_run`); everything here is the same for every exported runtime.
"""
from __future__ import annotations

import os
from typing import Mapping, Optional

import numpy as np
import torch

from .base import BackendCapabilities, refuse_extras

Shape = tuple[int, ...]
Profile = dict[str, tuple[Shape, Shape, Shape]]  # input -> (min, opt, max)


def load_token_embedding(folder: str, device: torch.device | str = "cpu") -> Optional[torch.Tensor]:
    """The text encoder's token-embedding table the exporter saved beside its graph, or None when
    the export has no text encoder."""
    path = os.path.join(folder, "text_encoder", "token_embedding.npy")
    if not os.path.isfile(path):
        return None
    return torch.from_numpy(np.load(path)).to(device)


def timestep_per_row(timestep: torch.Tensor, batch: int) -> torch.Tensor:
    """The graphs take one timestep per batch row; samplers may pass a single one."""
    if timestep.numel() == 1:
        return timestep.reshape(-1).float().expand(batch)
    return timestep.float()


def check_in_profile(profile: Profile, shapes: Mapping[str, Shape], *, engine: str = "engine") -> None:
    """Refuse inputs outside the engine's range, naming the input, the axis and what to rebuild."""
    for name, shape in shapes.items():
        lo, _, hi = profile[name]
        for axis, (value, a, b) in enumerate(zip(shape, lo, hi)):
            if not a <= value <= b:
                raise ValueError(f"{engine}: input {name!r} axis {axis} is {value}, outside the engine's "
                                 f"range {a}-{b}; rebuild the engine with a wider profile "
                                 "(sdrt export --to tensorrt --size/--batch)")


class ExportedBackend:
    """The Backend contract over exported component graphs. Subclasses set `name`, `manifest`
    (with "text_layers" when a text encoder was exported) and `token_embedding` (a torch table,
    or None), and implement `_run`."""

    name = "exported"
    # fixed graphs: no torch modules to patch, no inputs beyond the export specs'
    capabilities = BackendCapabilities(patchable_weights=False, extra_unet_inputs=False, devices=("cpu", "cuda"))
    manifest: dict
    token_embedding: Optional[torch.Tensor] = None

    def _run(self, component: str, like: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        """Run `component` on `inputs` (named as in the export specs); the first output as float32
        on `like`'s device."""
        raise NotImplementedError

    def _missing(self, component: str, present) -> ValueError:
        return ValueError(f"{getattr(self, 'folder', 'this export')}: this export has no {component} "
                          f"(exported: {', '.join(present)})")

    def unet_forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                     extras: Optional[dict] = None) -> torch.Tensor:
        refuse_extras(self.name, extras)
        return self._run("unet", x, sample=x, timestep=timestep_per_row(timestep, x.shape[0]),
                         encoder_hidden_states=context)

    def encode_text(self, ids: torch.Tensor, clip_skip: int = 1, embeddings=None) -> torch.Tensor:
        """Token ids -> hidden states: the token lookup here (textual-inversion vectors replace their
        slots), the transformer in the graph, clip skip N = layer L - N of its per-layer output."""
        if self.token_embedding is None:
            raise self._missing("text_encoder", self.manifest.get("components", {}))
        layers = int(self.manifest["text_layers"])
        if not 1 <= clip_skip <= layers:
            raise ValueError(f"clip_skip={clip_skip}; this text encoder has {layers} layers")
        embeds = self.token_embedding[ids.to(self.token_embedding.device)].float()
        for row, slots in enumerate(embeddings or []):
            for slot in slots:
                embeds[row, slot.offset:slot.offset + slot.vectors.shape[0]] = slot.vectors.to(embeds)
        return self._run("text_encoder", ids, inputs_embeds=embeds)[layers - clip_skip]

    def vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self._run("vae_decoder", latents, latent=latents)

    def vae_encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._run("vae_encoder", pixels, image=pixels)
