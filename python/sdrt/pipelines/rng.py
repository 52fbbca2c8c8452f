"""Per-image noise with A1111's "CPU" RNG source (modules/rng.py semantics): one torch CPU generator
per image, seeded with that image's seed, so a seed gives the same picture on any machine and at
any batch position. Variation seeds blend in a second noise by slerp; ENSD re-seeds the generators
of the sampler's later draws (ancestral / SDE noise) with seed + delta."""
from __future__ import annotations

import random
from typing import Sequence

import torch

MAX_SEED = 4294967294  # A1111 draws random seeds in [0, 4294967294)


def resolve_seed(seed: int | None, name: str = "seed") -> int:
    """-1 (or None) picks a random seed, as in A1111."""
    if seed is None or int(seed) == -1:
        return random.randrange(MAX_SEED)
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"{name}={seed}; use a non-negative seed, or -1 for a random one")
    return seed


def _randn(seed: int, shape: Sequence[int]) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=torch.Generator(device="cpu").manual_seed(int(seed)), device="cpu")


def slerp(val: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """A1111's slerp (variation seeds): spherical interpolation with norms taken along dim 1 of the
    (C, H, W) noise, falling back to its linear blend when the two are nearly parallel."""
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(1) * high


class ImageRNG:
    """first() draws the initial noise; next() draws the noise of ancestral/SDE steps, both from
    the per-image generators in sequence."""

    def __init__(self, shape: Sequence[int], seeds: Sequence[int], *, subseeds: Sequence[int] | None = None,
                 subseed_strength: float = 0.0, eta_noise_seed_delta: int = 0):
        self.shape = tuple(shape)
        self.seeds = [int(s) for s in seeds]
        self.subseeds = None if subseeds is None else [int(s) for s in subseeds]
        self.subseed_strength = float(subseed_strength)
        self.ensd = int(eta_noise_seed_delta)
        self.generators = [torch.Generator(device="cpu").manual_seed(s) for s in self.seeds]

    def first(self) -> torch.Tensor:
        xs = []
        for i, generator in enumerate(self.generators):
            noise = torch.randn(self.shape, generator=generator, device="cpu")
            if self.subseeds is not None and self.subseed_strength != 0:
                noise = slerp(self.subseed_strength, noise, _randn(self.subseeds[i], self.shape))
            xs.append(noise)
        if self.ensd:
            self.generators = [torch.Generator(device="cpu").manual_seed(s + self.ensd) for s in self.seeds]
        return torch.stack(xs)

    def next(self) -> torch.Tensor:
        return torch.stack([torch.randn(self.shape, generator=g, device="cpu") for g in self.generators])
