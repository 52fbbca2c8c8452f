"""Per-image noise with A1111's "CPU" RNG source: one torch CPU generator per image, seeded with
that image's seed, so a seed gives the same picture on any machine and at any batch position."""
from __future__ import annotations

import random
from typing import Sequence

import torch

MAX_SEED = 4294967294  # A1111 draws random seeds in [0, 4294967294)


def resolve_seed(seed: int | None) -> int:
    """-1 (or None) picks a random seed, as in A1111."""
    if seed is None or int(seed) == -1:
        return random.randrange(MAX_SEED)
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed={seed}; use a non-negative seed, or -1 for a random one")
    return seed


class ImageRNG:
    """first() draws the initial noise; next() draws the noise of ancestral/SDE steps, both from
    the per-image generators in sequence (A1111 modules/rng.py ImageRNG)."""

    def __init__(self, shape: Sequence[int], seeds: Sequence[int]):
        self.shape = tuple(shape)
        self.generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]

    def _draw(self) -> torch.Tensor:
        return torch.stack([torch.randn(self.shape, generator=g, device="cpu") for g in self.generators])

    def first(self) -> torch.Tensor:
        return self._draw()

    def next(self) -> torch.Tensor:
        return self._draw()
