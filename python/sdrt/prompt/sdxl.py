"""SDXL's text conditioning with A1111's prompt semantics (modules/sd_hijack_clip.py over sgm's
GeneralConditioner; Podell et al. 2023, sec. 2.1).

Every encoder of the model chunks, weights and encodes the prompt on its own, as A1111's wrapped
embedders do: the same 75-token chunks, BREAK and comma backtracking, emphasis renormalised over
each encoder's own output; OpenCLIP bigG re-pads after the first EOS with id 0. Their penultimate
hidden states (no final layer norm) are concatenated along the width (CLIP-L 768 + bigG 1280 =
2048); bigG's pooled, projected output of the first chunk (before emphasis) is the pooled text
embedding. Clip skip does not apply (A1111's default; its "sdxl_clip_l_skip" option is not
reproduced). Textual inversion: each encoder takes its own vectors (an SDXL embedding's clip_l /
clip_g) through its own finder.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Mapping, Optional, Sequence

import torch

from .chunking import EmbeddingFinder
from .conditioning import ConditioningOptions, EncodedTexts, encode_texts_pooled

OPEN_CLIP_PAD = 0  # sgm's OpenCLIP tokenizer pads with 0; CLIP-L keeps EOS

# (ids (B, 77), component, per-row embedding slots) -> (penultimate hidden states, pooled | None)
SDXLEncode = Callable[[torch.Tensor, str, Sequence], tuple]


@dataclass
class SDXLTextEncoder:
    """A TextBatchEncoder for SDXL models. `components`: the model's text encoders in
    concatenation order ("text_encoder" CLIP-L, then "text_encoder_2" bigG; a refiner has only the
    latter); `finders`: each component's textual-inversion hook."""
    tokenizer: object
    encode: SDXLEncode
    components: Sequence[str]
    options: ConditioningOptions
    finders: Optional[Mapping[str, Optional[EmbeddingFinder]]] = None

    def __call__(self, texts: Sequence[str]) -> EncodedTexts:
        contexts, pooled = [], None
        for component in self.components:
            opts = replace(self.options, clip_skip=1, find_embedding=(self.finders or {}).get(component),
                           pad_id=OPEN_CLIP_PAD if component == "text_encoder_2" else self.options.pad_id)
            encoded = encode_texts_pooled(texts, self.tokenizer, self._encoder(component), opts)
            contexts.append(encoded.context)
            pooled = encoded.pooled if encoded.pooled is not None else pooled
        if pooled is None:
            raise ValueError(f"SDXL conditioning needs text_encoder_2's pooled output; components: {list(self.components)}")
        return EncodedTexts(torch.cat(contexts, dim=-1), pooled)

    def _encoder(self, component: str):
        return lambda ids, clip_skip, embeddings: self.encode(ids, component, embeddings)
