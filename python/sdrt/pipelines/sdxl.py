"""SDXL's added conditions (Podell et al. 2023, sec. 2.2, "micro-conditioning"): the pooled text
embedding and the size / crop ids, given to diffusers' UNet as ``added_cond_kwargs`` on every call.

The ids follow A1111's sd_models_xl.get_learned_conditioning: original size (h, w) and target size
(h, w) are the pass's height and width, the crop (top, left) is (0, 0) (A1111's sdxl_crop_top /
sdxl_crop_left defaults); a refiner UNet takes original size, crop and an aesthetic score instead
(6.0 for the prompt, 2.5 for the negative: A1111's sdxl_refiner_high / low_aesthetic_score).
Which layout a UNet takes follows from its config (its added-embedding width).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..sampling.unet_inputs import COND, UNetCall

HIGH_AESTHETIC_SCORE, LOW_AESTHETIC_SCORE = 6.0, 2.5
BASE_IDS, REFINER_IDS = 6, 5


def time_id_count(unet_config, pooled_width: int) -> int:
    """How many size / crop / score ids a text_time UNet embeds: (added width - pooled) / id width."""
    total = int(unet_config.projection_class_embeddings_input_dim) - int(pooled_width)
    count, rest = divmod(total, int(unet_config.addition_time_embed_dim))
    if rest or count not in (BASE_IDS, REFINER_IDS):
        raise ValueError(f"an SDXL UNet embeds {total} widths of added ids at {unet_config.addition_time_embed_dim} "
                         f"each; known layouts: {BASE_IDS} (base) or {REFINER_IDS} (refiner)")
    return count


def time_ids(count: int, width: int, height: int, aesthetic_score: float) -> torch.Tensor:
    """The ids of one row: base (h, w, 0, 0, h, w); refiner (h, w, 0, 0, score)."""
    ids = [height, width, 0, 0] + ([height, width] if count == BASE_IDS else [aesthetic_score])
    return torch.tensor(ids, dtype=torch.float32)


@dataclass
class SDXLAddedInputs:
    """The ExtraInput (sampling.unet_inputs) of an SDXL model: each row's pooled text embedding
    (its AND part's, or its negative's, at the call's step) and time ids."""
    batch: Sequence            # the sampler batch's ImageConditioning, as the guidance sees it
    cond_ids: torch.Tensor     # (count,)
    uncond_ids: torch.Tensor

    @classmethod
    def for_job(cls, batch: Sequence, count: int, width: int, height: int) -> "SDXLAddedInputs":
        return cls(batch, time_ids(count, width, height, HIGH_AESTHETIC_SCORE),
                   time_ids(count, width, height, LOW_AESTHETIC_SCORE))

    def __call__(self, call: UNetCall) -> dict:
        pooled, ids = [], []
        for row in call.rows:
            image = self.batch[row.image]
            cond = image.conds[row.part] if row.kind == COND else image.uncond
            pooled.append(cond.pooled_at(call.step))
            ids.append(self.cond_ids if row.kind == COND else self.uncond_ids)
        device = call.x.device
        return {"added_cond_kwargs": {"text_embeds": torch.stack(pooled).to(device),
                                      "time_ids": torch.stack(ids).to(device)}}
