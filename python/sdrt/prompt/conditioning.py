"""Prompts -> cross-attention conditioning, with A1111's semantics.

Chunks of 77 tokens (sdrt.prompt.chunking) are encoded separately and concatenated along the
token axis (77 * k). Emphasis ("Original"): ``orig = z.mean(); z *= multipliers; z *= orig / z.mean()``
over the batch being encoded; "No norm" skips the renormalisation; "Ignore" drops the weights;
"None" does not parse emphasis at all (brackets are text).
A prompt's schedule (prompt editing, alternation) is encoded as one batch, as A1111 does, and
``AND`` sub-prompts carry their weights to the guidance combine.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .chunking import EOS, EmbeddingFinder, EmbeddingSlot, empty_chunk, tokenize_prompt
from .scheduling import get_learned_conditioning_prompt_schedules, split_and

# A1111's emphasis option: "Ignore" parses brackets but drops the weights; "None" keeps the
# brackets as text.
EMPHASIS_MODES = ("Original", "No norm", "Ignore", "None")

# (ids (B, 77), clip_skip, per-row embedding slots) -> hidden states (B, 77, D)
TextEncoder = Callable[[torch.Tensor, int, Sequence[Sequence[EmbeddingSlot]]], torch.Tensor]


@dataclass
class ConditioningOptions:
    clip_skip: int = 1
    emphasis: str = "Original"
    comma_backtrack: int = 20
    pad_id: int = EOS  # SD2's OpenCLIP pads with 0 after the first EOS
    find_embedding: EmbeddingFinder | None = None
    hires_steps: int | None = None  # a hires pass's steps: prompt-editing steps count as A1111's hires form

    def __post_init__(self) -> None:
        if self.emphasis not in EMPHASIS_MODES:
            raise ValueError(f"emphasis={self.emphasis!r}; valid: {', '.join(EMPHASIS_MODES)}")
        if self.clip_skip < 1:
            raise ValueError(f"clip_skip={self.clip_skip}; must be >= 1")


def encode_texts(texts: Sequence[str], tokenizer, encode: TextEncoder, opts: ConditioningOptions) -> torch.Tensor:
    """Encode `texts` as one batch -> (len(texts), 77 * k, D); k is the longest prompt's chunk count,
    shorter prompts are filled with empty chunks."""
    per_text = [tokenize_prompt(t, tokenizer, comma_backtrack=opts.comma_backtrack,
                                emphasis=opts.emphasis != "None", find_embedding=opts.find_embedding)[0]
                for t in texts]
    zs = []
    for i in range(max(len(c) for c in per_text)):
        rows = [chunks[i] if i < len(chunks) else empty_chunk() for chunks in per_text]
        ids = torch.tensor([r.tokens for r in rows], dtype=torch.long)
        if opts.pad_id != EOS:
            for row in ids:
                first_eos = int((row == EOS).nonzero()[0])
                row[first_eos + 1:] = opts.pad_id
        z = encode(ids, opts.clip_skip, [r.embeddings for r in rows])
        if opts.emphasis == "Original" or opts.emphasis == "No norm":
            mult = torch.tensor([r.multipliers for r in rows], dtype=z.dtype, device=z.device)[..., None]
            original_mean = z.mean()
            z = z * mult
            if opts.emphasis == "Original":
                z = z * (original_mean / z.mean())
        zs.append(z)
    return torch.cat(zs, dim=1)


@dataclass
class ScheduledCond:
    """One text's conditioning over the run: ``tensors[j]`` is used while step <= ``ends[j]``."""
    ends: list[int]
    tensors: list[torch.Tensor]  # each (T, D)

    def at(self, step: int) -> torch.Tensor:
        for end, t in zip(self.ends, self.tensors):
            if step <= end:
                return t
        return self.tensors[-1]


def scheduled_conditioning(prompt: str, steps: int, tokenizer, encode: TextEncoder, opts: ConditioningOptions,
                           cache: dict | None = None) -> ScheduledCond:
    """Prompt editing / alternation resolved for `steps`; the schedule's texts are encoded as one
    batch (A1111 get_learned_conditioning)."""
    key = (prompt, steps, opts.hires_steps)
    if cache is not None and key in cache:
        return cache[key]
    schedule = get_learned_conditioning_prompt_schedules([prompt], steps, opts.hires_steps)[0]
    z = encode_texts([text for _, text in schedule], tokenizer, encode, opts)
    result = ScheduledCond([end for end, _ in schedule], list(z))
    if cache is not None:
        cache[key] = result
    return result


@dataclass
class ImageConditioning:
    """Everything guidance needs for one image: AND sub-prompts with weights, and the negative."""
    conds: list[ScheduledCond]
    weights: list[float]
    uncond: ScheduledCond


def conditioning_for_batch(prompts: Sequence[str], negatives: Sequence[str], steps: int, tokenizer,
                           encode: TextEncoder, opts: ConditioningOptions) -> list[ImageConditioning]:
    cache: dict = {}
    out = []
    for prompt, negative in zip(prompts, negatives):
        parts = split_and(prompt)
        conds = [scheduled_conditioning(text, steps, tokenizer, encode, opts, cache) for text, _ in parts]
        uncond = scheduled_conditioning(negative, steps, tokenizer, encode, opts, cache)
        out.append(ImageConditioning(conds, [w for _, w in parts], uncond))
    return out
