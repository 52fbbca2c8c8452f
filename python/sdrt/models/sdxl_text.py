"""SDXL's text encoder outputs (sgm / A1111, Podell et al. 2023): the penultimate layer's hidden
states *without* the final layer norm from each encoder, and from the OpenCLIP one also the pooled
output (final layer norm at the end-of-text token, then the text projection). One function used
by the backends and the toy-XL trainer, so training and inference condition the same way."""
from __future__ import annotations

from typing import Optional

import torch

def penultimate_and_pooled(text_encoder, ids: torch.Tensor, *, pooled: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(hidden_states[-2], projected pooled output or None) of a CLIPTextModel(WithProjection).
    transformers pools at the first EOS (eos_token_id), as OpenCLIP's argmax over ids does."""
    out = text_encoder(ids, output_hidden_states=True)
    hidden = out.hidden_states[-2]
    if not pooled:
        return hidden, None
    if not hasattr(out, "text_embeds"):
        raise ValueError("the pooled SDXL output needs a CLIPTextModelWithProjection (text_encoder_2)")
    return hidden, out.text_embeds
