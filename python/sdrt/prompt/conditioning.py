"""Prompts -> cross-attention conditioning, with A1111's semantics.

Chunks of 77 tokens (sdrt.prompt.chunking) are encoded separately and concatenated along the
token axis (77 * k). Emphasis ("Original"): ``orig = z.mean(); z *= multipliers; z *= orig / z.mean()``
over the batch being encoded; "No norm" skips the renormalisation; "Ignore" drops the weights;
"None" does not parse emphasis at all (brackets are text).
A prompt's schedule (prompt editing, alternation) is encoded as one batch, as A1111 does, and
``AND`` sub-prompts carry their weights to the guidance combine. The schedule stage takes a
`TextBatchEncoder` (texts -> EncodedTexts), so one text encoder (`single_encoder`) and SDXL's
pair (sdrt.prompt.sdxl) share it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .chunking import EOS, EmbeddingFinder, EmbeddingSlot, empty_chunk, pad_after_eos, tokenize_prompt
from .scheduling import get_learned_conditioning_prompt_schedules, split_and

# A1111's emphasis option: "Ignore" parses brackets but drops the weights; "None" keeps the
# brackets as text.
EMPHASIS_MODES = ("Original", "No norm", "Ignore", "None")

# (ids (B, 77), clip_skip, per-row embedding slots) -> hidden states (B, 77, D), or
# (hidden states, pooled (B, P)) for an encoder whose pooled output conditions the UNet (SDXL)
TextEncoder = Callable[[torch.Tensor, int, Sequence[Sequence[EmbeddingSlot]]], torch.Tensor]


@dataclass
class EncodedTexts:
    context: torch.Tensor                 # (N, 77 * k, D): cross-attention conditioning
    pooled: torch.Tensor | None = None    # (N, P): SDXL's pooled text embedding (first chunk)


TextBatchEncoder = Callable[[Sequence[str]], EncodedTexts]


@dataclass
class ConditioningOptions:
    clip_skip: int = 1
    emphasis: str = "Original"
    comma_backtrack: int = 20
    pad_id: int = EOS  # SD2's OpenCLIP pads with 0 after the first EOS
    find_embedding: EmbeddingFinder | None = None

    def __post_init__(self) -> None:
        if self.emphasis not in EMPHASIS_MODES:
            raise ValueError(f"emphasis={self.emphasis!r}; valid: {', '.join(EMPHASIS_MODES)}")
        if self.clip_skip < 1:
            raise ValueError(f"clip_skip={self.clip_skip}; must be >= 1")


def encode_texts(texts: Sequence[str], tokenizer, encode: TextEncoder, opts: ConditioningOptions) -> torch.Tensor:
    """Encode `texts` as one batch -> (len(texts), 77 * k, D); k is the longest prompt's chunk count,
    shorter prompts are filled with empty chunks."""
    return encode_texts_pooled(texts, tokenizer, encode, opts).context


def encode_texts_pooled(texts: Sequence[str], tokenizer, encode: TextEncoder, opts: ConditioningOptions) -> EncodedTexts:
    """encode_texts, keeping the pooled output of the first chunk when `encode` returns one
    (A1111 takes SDXL's pooled vector from the first chunk, before emphasis)."""
    per_text = [tokenize_prompt(t, tokenizer, comma_backtrack=opts.comma_backtrack,
                                emphasis=opts.emphasis != "None", find_embedding=opts.find_embedding)[0]
                for t in texts]
    zs, pooled = [], None
    for i in range(max(len(c) for c in per_text)):
        rows = [chunks[i] if i < len(chunks) else empty_chunk() for chunks in per_text]
        ids = pad_after_eos(torch.tensor([r.tokens for r in rows], dtype=torch.long), opts.pad_id)
        z = encode(ids, opts.clip_skip, [r.embeddings for r in rows])
        if isinstance(z, tuple):
            z, chunk_pooled = z
            pooled = chunk_pooled if i == 0 else pooled
        if opts.emphasis == "Original" or opts.emphasis == "No norm":
            mult = torch.tensor([r.multipliers for r in rows], dtype=z.dtype, device=z.device)[..., None]
            original_mean = z.mean()
            z = z * mult
            if opts.emphasis == "Original":
                z = z * (original_mean / z.mean())
        zs.append(z)
    return EncodedTexts(torch.cat(zs, dim=1), pooled)


def single_encoder(tokenizer, encode: TextEncoder, opts: ConditioningOptions) -> TextBatchEncoder:
    """The TextBatchEncoder of a model with one text encoder (SD1, SD2, the toy)."""
    return lambda texts: EncodedTexts(encode_texts(texts, tokenizer, encode, opts))


@dataclass
class ScheduledCond:
    """One text's conditioning over the run: ``tensors[j]`` (and ``pooled[j]``) is used while
    step <= ``ends[j]``."""
    ends: list[int]
    tensors: list[torch.Tensor]  # each (T, D)
    pooled: list[torch.Tensor] | None = None  # each (P,): SDXL's pooled text embedding

    def _index(self, step: int) -> int:
        for j, end in enumerate(self.ends):
            if step <= end:
                return j
        return len(self.ends) - 1

    def at(self, step: int) -> torch.Tensor:
        return self.tensors[self._index(step)]

    def pooled_at(self, step: int) -> torch.Tensor:
        if self.pooled is None:
            raise ValueError("this conditioning has no pooled text embedding (not an SDXL model)")
        return self.pooled[self._index(step)]

    def zeros(self) -> "ScheduledCond":
        """The same shapes, all zero (sgm's force_zero_embeddings: A1111's empty SDXL negative)."""
        return ScheduledCond([self.ends[-1]], [torch.zeros_like(self.tensors[0])],
                             None if self.pooled is None else [torch.zeros_like(self.pooled[0])])


def scheduled_conditioning(prompt: str, steps: int, encoder: TextBatchEncoder, *, hires_steps: int | None = None,
                           cache: dict | None = None) -> ScheduledCond:
    """Prompt editing / alternation resolved for `steps` (`hires_steps`: a hires pass's, which
    counts prompt-editing steps in A1111's hires form); the schedule's texts are encoded as one
    batch (A1111 get_learned_conditioning)."""
    key = (prompt, steps, hires_steps)
    if cache is not None and key in cache:
        return cache[key]
    schedule = get_learned_conditioning_prompt_schedules([prompt], steps, hires_steps)[0]
    encoded = encoder([text for _, text in schedule])
    result = ScheduledCond([end for end, _ in schedule], list(encoded.context),
                           None if encoded.pooled is None else list(encoded.pooled))
    if cache is not None:
        cache[key] = result
    return result


@dataclass
class ImageConditioning:
    """Everything guidance needs for one image: AND sub-prompts with weights, and the negative."""
    conds: list[ScheduledCond]
    weights: list[float]
    uncond: ScheduledCond


def conditioning_for_batch(prompts: Sequence[str], negatives: Sequence[str], steps: int, encoder: TextBatchEncoder,
                           *, hires_steps: int | None = None, zero_empty_negatives: bool = False
                           ) -> list[ImageConditioning]:
    """Every image's conds and uncond. zero_empty_negatives: an image whose negative prompt is empty
    (every text of its schedule "") gets zeros as its uncond (A1111's force_zero_negative_prompt,
    decided per prompt; diffusers' force_zeros_for_empty_prompt)."""
    cache: dict = {}
    out = []
    for prompt, negative in zip(prompts, negatives):
        parts = split_and(prompt)
        conds = [scheduled_conditioning(text, steps, encoder, hires_steps=hires_steps, cache=cache)
                 for text, _ in parts]
        uncond = scheduled_conditioning(negative, steps, encoder, hires_steps=hires_steps, cache=cache)
        if zero_empty_negatives and _all_empty(negative, steps, hires_steps):
            uncond = uncond.zeros()
        out.append(ImageConditioning(conds, [w for _, w in parts], uncond))
    return out


def _all_empty(prompt: str, steps: int, hires_steps: int | None) -> bool:
    return all(text == "" for _, text in get_learned_conditioning_prompt_schedules([prompt], steps, hires_steps)[0])
