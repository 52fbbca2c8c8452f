"""Batching policies: how the images of a sampler batch are grouped into UNet and VAE calls."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class BatchPolicy:
    """images_per_call: 1 runs every image on its own, so an image is bit-identical to the same
    seed generated alone (batched convolutions and matmuls round differently, and padding to the
    batch's longest prompt changes attention); None puts the whole batch in one call (faster on a
    GPU). single_call: conds and unconds always share one UNet call, their contexts padded to one
    length (frames-as-batch: a motion module must see every frame in the same call)."""
    name: str
    images_per_call: Optional[int]
    single_call: bool = False

    def groups(self, n: int) -> list[slice]:
        size = n if self.images_per_call is None else self.images_per_call
        return [slice(i, min(i + size, n)) for i in range(0, n, max(size, 1))]


PER_IMAGE = BatchPolicy("per image", 1)
WHOLE_BATCH = BatchPolicy("whole batch", None)
FRAMES_AS_BATCH = BatchPolicy("frames as batch", None, single_call=True)
BATCH_POLICIES = {p.name: p for p in (PER_IMAGE, WHOLE_BATCH, FRAMES_AS_BATCH)}
