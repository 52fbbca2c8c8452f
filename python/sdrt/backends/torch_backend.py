"""The torch backend: diffusers / transformers modules run eagerly with torch.

Contract shared by all backends (backends/base.py): inputs may live on any device; results come
back as float32 on the device of the call's main input (the sampler loop's device), so the
pipeline never has to know where the model runs. The only backend whose weights can be patched
per job (LoRA) and whose UNet takes extra inputs (ControlNet residuals), as it runs the modules
themselves rather than a fixed graph.
"""
from __future__ import annotations

import contextlib
from typing import Any, Optional

import torch

from ..models.sdxl_text import penultimate_and_pooled
from .base import BackendCapabilities
from .compiled_unet import compile_unet


class TorchBackend:
    name = "torch"
    capabilities = BackendCapabilities(patchable_weights=True, extra_unet_inputs=True, devices=("cpu", "cuda", "mps"))

    def __init__(self, unet, text_encoder, vae, *, text_encoder_2=None, device: str = "cpu",
                 dtype: torch.dtype = torch.float32, compile_mode: str = "off"):
        """`text_encoder_2`: SDXL's OpenCLIP bigG (with projection); an SDXL refiner has only that
        one (`text_encoder` None). `compile_mode`: the UNet's torch.compile mode
        (backends/compiled_unet.py), "off" runs it eagerly."""
        self.device, self.dtype = torch.device(device), dtype
        self.unet = _place(unet, self.device, dtype)
        self.compile_mode = compile_mode
        self._unet_call = compile_unet(self.unet, compile_mode, self.device)  # self.unet itself when "off"
        self.text_encoder = _place(text_encoder, self.device, dtype) if text_encoder is not None else None
        self.text_encoder_2 = _place(text_encoder_2, self.device, dtype) if text_encoder_2 is not None else None
        self.vae = _place(vae, self.device, dtype)
        # A1111's NaN check: a half-precision VAE whose decode is not finite runs in fp32 from then on
        self.vae_dtype = dtype

    @torch.no_grad()
    def unet_forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                     extras: Optional[dict] = None) -> torch.Tensor:
        """`extras` are keyword inputs of diffusers' UNet call (e.g. down_block_additional_residuals,
        mid_block_additional_residual), moved to the UNet's device and dtype like the main inputs."""
        kwargs = {k: self._to_unet(v) for k, v in (extras or {}).items()}
        out = self._unet_call(x.to(self.device, self.dtype), timestep.to(self.device),
                              context.to(self.device, self.dtype), **kwargs)
        return out.sample.to(x.device, torch.float32)

    @torch.no_grad()
    def controlnet_forward(self, controlnet, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                           hint: torch.Tensor, extras: Optional[dict] = None) -> tuple[list, torch.Tensor]:
        """A ControlNet's residuals (down blocks, mid) for UNet inputs x / timestep / context and
        control images `hint` in [0, 1], unscaled, float32 on x's device. `extras`: the call's
        other UNet inputs, of which a ControlNet takes added_cond_kwargs (SDXL)."""
        controlnet = _place(controlnet, self.device, self.dtype)
        added = (extras or {}).get("added_cond_kwargs")
        down, mid = controlnet(x.to(self.device, self.dtype), timestep.to(self.device),
                               context.to(self.device, self.dtype), self._to_unet(hint), conditioning_scale=1.0,
                               added_cond_kwargs=self._to_unet(added), return_dict=False)
        return [d.to(x.device, torch.float32) for d in down], mid.to(x.device, torch.float32)

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
        with _embedding_slots(self.text_encoder, embeddings):
            out = self.text_encoder(ids.to(self.device), output_hidden_states=clip_skip > 1)
        if clip_skip <= 1:
            return out.last_hidden_state.to(ids.device, torch.float32)
        hidden = out.hidden_states[-clip_skip]
        text_model = getattr(self.text_encoder, "text_model", self.text_encoder)  # transformers 4 nests it, 5 not
        return text_model.final_layer_norm(hidden).to(ids.device, torch.float32)

    @torch.no_grad()
    def encode_text_sdxl(self, ids: torch.Tensor, component: str = "text_encoder",
                         embeddings=None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """SDXL's features of one encoder (sdrt.models.sdxl_text): its penultimate hidden states
        without the final layer norm, and for "text_encoder_2" its projected pooled output."""
        encoder = {"text_encoder": self.text_encoder, "text_encoder_2": self.text_encoder_2}.get(component)
        if encoder is None:
            raise ValueError(f"component={component!r}: this model has no such text encoder")
        with _embedding_slots(encoder, embeddings):
            hidden, pooled = penultimate_and_pooled(encoder, ids.to(self.device), pooled=component == "text_encoder_2")
        return hidden.to(ids.device, torch.float32), None if pooled is None else pooled.to(ids.device, torch.float32)

    @torch.no_grad()
    def vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Unscaled VAE latents -> images in [-1, 1], (N, 3, H, W) float32. A half-precision decode
        that is not finite (SDXL's VAE overflows fp16) is re-run in fp32, and the VAE stays fp32
        (A1111's auto_vae_precision); the fp16-fix VAE (`vae=`) avoids the retry."""
        out = self.vae.decode(latents.to(self.device, self.vae_dtype)).sample
        if self.vae_dtype != torch.float32 and not torch.isfinite(out).all():
            self.vae_dtype = torch.float32
            self.vae = self.vae.to(torch.float32)
            out = self.vae.decode(latents.to(self.device, torch.float32)).sample
        return out.to(latents.device, torch.float32)

    @torch.no_grad()
    def vae_encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> unscaled posterior mean latents."""
        return self.vae.encode(pixels.to(self.device, self.vae_dtype)).latent_dist.mean.to(pixels.device, torch.float32)


@contextlib.contextmanager
def _embedding_slots(text_encoder, embeddings):
    """Textual-inversion vectors in place of their placeholder tokens' embeddings for one call."""
    if not embeddings or not any(embeddings):
        yield
        return

    def put_vectors(module, inputs, output):
        output = output.clone()
        for row, slots in enumerate(embeddings):
            for slot in slots:
                output[row, slot.offset:slot.offset + slot.vectors.shape[0]] = slot.vectors.to(output)
        return output
    hook = text_encoder.get_input_embeddings().register_forward_hook(put_vectors)
    try:
        yield
    finally:
        hook.remove()


def _place(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    current = next((p.dtype for p in module.parameters()), dtype)
    if current != dtype:  # casting a diffusers module that is already in dtype only logs a warning
        module = module.to(dtype=dtype)
    return module.to(device).eval().requires_grad_(False)
