"""Attention implementations the torch backend's UNet can run on, as diffusers attention processors.

``ProjectedAttnProcessor`` does diffusers' ``Attention`` plumbing (group norm, q/k/v projections,
heads, output projection, residual) once; subclasses only say how softmax(q k^T * scale) v is
computed for (batch, heads, length, head_dim) tensors:
- ``SdrtAttnProcessor``: sdrt's fused CPU kernel through the torch custom op ``sdrt::attention``
  (with a fake implementation, so torch.compile and CUDA-graph capture see through it). fp32 / bf16
  CPU tensors run the kernel, except the shapes where SDPA measured faster; other devices / dtypes run
  torch's SDPA inside the op (sdrt's CUDA kernels are compiled but have not run on a GPU yet, so
  the op does not use them until a GPU session has tested and measured them).
- ``SplitEinsumAttnProcessor`` (Core ML export): each head on its own with einsum.
"""
from __future__ import annotations

import contextlib

import torch

ATTENTION_CHOICES = ("sdpa", "sdrt")
_CPU_DTYPES = (torch.float32, torch.bfloat16)  # the CPU kernel's storage types (fp32 arithmetic)


@torch.library.custom_op("sdrt::attention", mutates_args=())
def sdrt_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(q k^T * scale) v over the last two dims; sdrt's fused kernel for fp32 / bf16 CPU tensors."""
    if q.device.type == "cpu" and q.dtype in _CPU_DTYPES and k.dtype == v.dtype == q.dtype and \
            not _sdpa_wins(q.shape[-2], k.shape[-2]):
        from .. import kernels

        return kernels.attention(q, k, v, scale=scale)
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale)


def _sdpa_wins(q_len: int, k_len: int) -> bool:
    """Where torch's SDPA measured faster (bench/results/attention-cpu.json): few queries over a key
    count that leaves most of sdrt's last 64-key block empty (SD 1.5's 64 x 77 cross-attention)."""
    return q_len <= 64 and k_len % 64 != 0


@sdrt_attention.register_fake
def _(q, k, v, scale):
    return torch.empty_like(q)


class ProjectedAttnProcessor:
    """diffusers ``Attention`` around an ``attend(q, k, v, scale)`` on (batch, heads, len, dim)."""

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        if attention_mask is not None:
            raise ValueError(f"{type(self).__name__}: attention masks are not supported (SD UNets use none)")
        residual = hidden_states
        image_layout = hidden_states.ndim == 4
        if image_layout:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        batch, heads = q.shape[0], attn.heads
        head_dim = q.shape[-1] // heads

        def split(t):
            return t.view(batch, -1, heads, head_dim).transpose(1, 2)
        out = self.attend(split(q), split(k), split(v), attn.scale)
        out = out.transpose(1, 2).reshape(batch, -1, heads * head_dim).to(q.dtype)
        hidden_states = attn.to_out[1](attn.to_out[0](out))
        if image_layout:
            hidden_states = hidden_states.transpose(1, 2).reshape(b, c, h, w)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


class SdrtAttnProcessor(ProjectedAttnProcessor):
    def attend(self, q, k, v, scale):
        return sdrt_attention(q.contiguous(), k.contiguous(), v.contiguous(), float(scale))


class SplitEinsumAttnProcessor(ProjectedAttnProcessor):
    """Each head on its own with einsum (Apple's ml-stable-diffusion SPLIT_EINSUM layout for the
    Neural Engine, which prefers many small matmuls to one batched one); same result as SDPA up to
    rounding."""

    def attend(self, q, k, v, scale):
        heads = []
        for i in range(q.shape[1]):
            weights = torch.einsum("bqd,bkd->bqk", q[:, i] * scale, k[:, i]).softmax(dim=-1)
            heads.append(torch.einsum("bqk,bkd->bqd", weights, v[:, i]))
        return torch.stack(heads, dim=1)


def set_attention(unet, attention: str) -> None:
    """Point every attention layer of a diffusers UNet at `attention` ("sdpa": diffusers' default)."""
    if attention not in ATTENTION_CHOICES:
        raise ValueError(f"attention={attention!r}; valid: {', '.join(ATTENTION_CHOICES)}")
    if attention == "sdpa":
        from diffusers.models.attention_processor import AttnProcessor2_0

        unet.set_attn_processor(AttnProcessor2_0())
    else:
        unet.set_attn_processor(SdrtAttnProcessor())


@contextlib.contextmanager
def attention_processors(unet, processor):
    """`unet` on `processor` for the block's duration (exports trace torch's own attention, or a
    layout of their own), its processors as they were afterwards. `unet` may be None."""
    if unet is None or not hasattr(unet, "set_attn_processor"):
        yield
        return
    if processor is None:
        from diffusers.models.attention_processor import AttnProcessor2_0

        processor = AttnProcessor2_0()
    saved = unet.attn_processors
    unet.set_attn_processor(processor)
    try:
        yield
    finally:
        unet.set_attn_processor(saved)
