"""Brownian-tree noise for the SDE samplers, as A1111 sets it up.

A1111 gives DPM++ SDE / 2M SDE / 3M SDE k-diffusion's BrownianTreeNoiseSampler with one
torchsde.BrownianTree per image, seeded with that image's seed, spanning [smallest non-zero sigma,
largest sigma]. A call (sigma, sigma_next) returns the tree's increment over that interval divided
by sqrt(|sigma_next - sigma|): unit-variance noise whose values over nested or overlapping intervals
are consistent (DPM++ SDE asks for [t, s] and then [t, t_next]), and the same for an image whatever
batch it is in. The trees live on the CPU, so a seed means the same noise on every device.
torchsde is the well-kept implementation A1111 itself uses (Li et al. 2020, "Scalable gradients
for stochastic differential equations", the Brownian interval of Kidger et al. 2021).
"""
from __future__ import annotations

import warnings
from typing import Sequence

import torch


class BrownianTreeNoise:
    def __init__(self, x: torch.Tensor, sigmas: torch.Tensor, seeds: Sequence[int]):
        import torchsde

        if len(seeds) != x.shape[0]:
            raise ValueError(f"BrownianTreeNoise: {len(seeds)} seeds for a batch of {x.shape[0]}")
        positive = sigmas[sigmas > 0]
        t0, t1 = torch.as_tensor(float(positive.min())), torch.as_tensor(float(sigmas.max()))
        w0 = torch.zeros(x.shape[1:], dtype=torch.float32)
        self.device, self.dtype = x.device, x.dtype
        self.trees = [torchsde.BrownianTree(t0, w0, t1, entropy=int(seed)) for seed in seeds]

    def __call__(self, sigma: float, sigma_next: float) -> torch.Tensor:
        a, b = torch.as_tensor(float(sigma)), torch.as_tensor(float(sigma_next))
        lo, hi, sign = (a, b, 1.0) if a < b else (b, a, -1.0)
        with warnings.catch_warnings():
            # The tree rounds its end points, so queries at exactly sigma_min / sigma_max are clamped
            # by a rounding error, with a warning (the one A1111's console shows); nothing is wrong.
            warnings.filterwarnings("ignore", message="Should have t", category=UserWarning)
            w = torch.stack([tree(lo, hi) for tree in self.trees]) * sign
        return (w / (b - a).abs().sqrt()).to(self.device, self.dtype).contiguous()
