"""A1111's prompt -> 77-token chunks: emphasis weights per token, BREAK, comma backtracking and
textual-inversion slots (modules/sd_hijack_clip.py, as documented in A1111_REFERENCE.md).

Each chunk holds 75 prompt tokens between BOS and EOS, padded with EOS. When a chunk is full and
the last comma is at most `comma_backtrack` tokens back, the tokens after that comma move to the
next chunk. An embedding occupies its vector count and moves whole to the next chunk if it does
not fit.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from .attention import parse_prompt_attention

CHUNK_TOKENS = 75
BOS, EOS, COMMA = 49406, 49407, 267


@dataclass
class EmbeddingSlot:
    """Vectors of a textual-inversion embedding placed at `offset` in a chunk (after BOS)."""
    offset: int
    name: str
    vectors: Any  # (n, D) tensor


@dataclass
class PromptChunk:
    tokens: list[int] = field(default_factory=list)
    multipliers: list[float] = field(default_factory=list)
    embeddings: list[EmbeddingSlot] = field(default_factory=list)


# (token ids of the whole fragment, position) -> (name, vectors (n, D), tokens consumed) or None.
EmbeddingFinder = Callable[[Sequence[int], int], Optional[tuple[str, Any, int]]]


def tokenize_prompt(text: str, tokenizer, *, comma_backtrack: int = 20, emphasis: bool = True,
                    find_embedding: EmbeddingFinder | None = None) -> tuple[list[PromptChunk], int]:
    """A prompt -> (chunks of 77 tokens with multipliers, prompt token count)."""
    parsed = parse_prompt_attention(text) if emphasis else [[text, 1.0]]
    token_lists = tokenizer([t for t, _ in parsed], truncation=False, add_special_tokens=False,
                            verbose=False)["input_ids"]
    chunks: list[PromptChunk] = []
    chunk = PromptChunk()
    token_count = 0
    last_comma = -1

    def close_chunk(is_last: bool = False) -> None:
        nonlocal chunk, token_count, last_comma
        token_count += len(chunk.tokens) if is_last else CHUNK_TOKENS
        pad = CHUNK_TOKENS - len(chunk.tokens)
        chunk.tokens = [BOS] + chunk.tokens + [EOS] * pad + [EOS]
        chunk.multipliers = [1.0] + chunk.multipliers + [1.0] * pad + [1.0]
        for slot in chunk.embeddings:
            slot.offset += 1  # past BOS
        chunks.append(chunk)
        chunk = PromptChunk()
        last_comma = -1

    for tokens, (fragment, weight) in zip(token_lists, parsed):
        if fragment == "BREAK" and weight == -1:
            close_chunk()
            continue
        position = 0
        while position < len(tokens):
            token = tokens[position]
            if token == COMMA:
                last_comma = len(chunk.tokens)
            elif (comma_backtrack and len(chunk.tokens) == CHUNK_TOKENS and last_comma != -1
                  and len(chunk.tokens) - last_comma <= comma_backtrack):
                cut = last_comma + 1
                moved_tokens, moved_mults = chunk.tokens[cut:], chunk.multipliers[cut:]
                moved_slots = [s for s in chunk.embeddings if s.offset >= cut]
                chunk.tokens, chunk.multipliers = chunk.tokens[:cut], chunk.multipliers[:cut]
                chunk.embeddings = [s for s in chunk.embeddings if s.offset < cut]
                close_chunk()
                chunk.tokens, chunk.multipliers = moved_tokens, moved_mults
                chunk.embeddings = [EmbeddingSlot(s.offset - cut, s.name, s.vectors) for s in moved_slots]
            if len(chunk.tokens) == CHUNK_TOKENS:
                close_chunk()
            found = find_embedding(tokens, position) if find_embedding else None
            if found is None:
                chunk.tokens.append(token)
                chunk.multipliers.append(weight)
                position += 1
                continue
            name, vectors, consumed = found
            n = int(vectors.shape[0])
            if n > CHUNK_TOKENS:
                raise ValueError(f"embedding {name!r} has {n} vectors; at most {CHUNK_TOKENS} fit in a chunk")
            if len(chunk.tokens) + n > CHUNK_TOKENS:
                close_chunk()
            chunk.embeddings.append(EmbeddingSlot(len(chunk.tokens), name, vectors))
            chunk.tokens += [0] * n  # placeholders, replaced by the vectors at encoding
            chunk.multipliers += [weight] * n
            position += consumed
    if chunk.tokens or not chunks:
        close_chunk(is_last=True)
    return chunks, token_count


def pad_after_eos(ids, pad_id: int):
    """Every position after a row's first EOS becomes `pad_id` (OpenCLIP pads with 0: SD2's and
    SDXL's second encoder; chunks are written EOS-padded). `ids`: a (B, 77) tensor."""
    import torch

    if pad_id == EOS:
        return ids
    is_eos = ids == EOS
    first = torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1), ids.shape[1])
    after = torch.arange(ids.shape[1], device=ids.device)[None, :] > first[:, None]
    return ids.masked_fill(after, pad_id)


def empty_chunk() -> PromptChunk:
    return PromptChunk([BOS] + [EOS] * (CHUNK_TOKENS + 1), [1.0] * (CHUNK_TOKENS + 2))
