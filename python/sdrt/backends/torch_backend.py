"""The torch backend: diffusers / transformers modules run eagerly with torch.

Contract shared by all backends (backends/base.py): inputs may live on any device; results come
back as float32 on the device of the call's main input (the sampler loop's device), so the
pipeline never has to know where the model runs. The only backend whose weights can be patched
per job (LoRA) and whose UNet takes extra inputs (ControlNet residuals), as it runs the modules
themselves rather than a fixed graph.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from .base import BackendCapabilities


class TorchBackend:
    name = "torch"
    capabilities = BackendCapabilities(patchable_weights=True, extra_unet_inputs=True, devices=("cpu", "cuda", "mps"))

    def __init__(self, unet, text_encoder, vae, *, device: str = "cpu", dtype: torch.dtype = torch.float32):
        self.device, self.dtype = torch.device(device), dtype
        self.unet = _place(unet, self.device, dtype)
        self.text_encoder = _place(text_encoder, self.device, dtype)
        self.vae = _place(vae, self.device, dtype)

    @torch.no_grad()
    def unet_forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                     extras: Optional[dict] = None) -> torch.Tensor:
        """`extras` are keyword inputs of diffusers' UNet call (e.g. down_block_additional_residuals,
        mid_block_additional_residual), moved to the UNet's device and dtype like the main inputs."""
        kwargs = {k: self._to_unet(v) for k, v in (extras or {}).items()}
        out = self.unet(x.to(self.device, self.dtype), timestep.to(self.device), context.to(self.device, self.dtype),
                        **kwargs)
        return out.sample.to(x.device, torch.float32)

    def _to_unet(self, value: Any) -> Any:
        """Tensors (also inside tuples / lists / dicts) to the UNet's device; floating ones to its
        dtype, integer ones (indices, masks) keep theirs."""
        if isinstance(value, torch.Tensor):
            return value.to(self.device, self.dtype) if value.is_floating_point() else value.to(self.device)
        if isinstance(value, (tuple, list)):
            return type(value)(self._to_unet(v) for v in value)
        if isinstance(value, dict):
            return {k: self._to_unet(v) for k, v in value.items()}
        return value

    @torch.no_grad()
    def encode_text(self, ids: torch.Tensor, clip_skip: int = 1, embeddings=None) -> torch.Tensor:
        """CLIP hidden states; clip skip N takes hidden_states[-N] then the final layer norm (A1111).
        `embeddings[row]` lists textual-inversion slots whose vectors replace the token embeddings."""
        hook = None
        if embeddings and any(embeddings):
            def put_vectors(module, inputs, output):
                output = output.clone()
                for row, slots in enumerate(embeddings):
                    for slot in slots:
                        output[row, slot.offset:slot.offset + slot.vectors.shape[0]] = slot.vectors.to(output)
                return output
            hook = self.text_encoder.get_input_embeddings().register_forward_hook(put_vectors)
        try:
            out = self.text_encoder(ids.to(self.device), output_hidden_states=clip_skip > 1)
        finally:
            if hook is not None:
                hook.remove()
        if clip_skip <= 1:
            return out.last_hidden_state.to(ids.device, torch.float32)
        hidden = out.hidden_states[-clip_skip]
        text_model = getattr(self.text_encoder, "text_model", self.text_encoder)  # transformers 4 nests it, 5 not
        return text_model.final_layer_norm(hidden).to(ids.device, torch.float32)

    @torch.no_grad()
    def vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Unscaled VAE latents -> images in [-1, 1], (N, 3, H, W) float32."""
        return self.vae.decode(latents.to(self.device, self.dtype)).sample.to(latents.device, torch.float32)

    @torch.no_grad()
    def vae_encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> unscaled posterior mean latents."""
        return self.vae.encode(pixels.to(self.device, self.dtype)).latent_dist.mean.to(pixels.device, torch.float32)


def _place(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    current = next((p.dtype for p in module.parameters()), dtype)
    if current != dtype:  # casting a diffusers module that is already in dtype only logs a warning
        module = module.to(dtype=dtype)
    return module.to(device).eval().requires_grad_(False)
