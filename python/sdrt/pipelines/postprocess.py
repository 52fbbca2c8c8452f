"""Post-processors: an ordered list of steps on the decoded images of each batch (paste-back
now; upscalers and face restoration plug in here)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence

from PIL import Image

from . import images as imgs
from .job import Batch


class PostProcessor(Protocol):
    def __call__(self, images: list[Image.Image], batch: Batch) -> list[Image.Image]: ...


def run_post_processors(processors: Sequence[PostProcessor], images: list[Image.Image],
                        batch: Batch) -> list[Image.Image]:
    for process in processors:
        images = process(images, batch)
    return images


@dataclass
class PasteBack:
    """Inpainting: the original's pixels come back outside the (blurred) mask (A1111 apply_overlay);
    with a region ("inpaint only masked") the result is first scaled back into it."""
    originals: list[Image.Image]
    mask: Image.Image
    region: Optional[tuple[int, int, int, int]]
    picks: Callable[[int, int], list[int]]   # (iteration, batch size) -> which original each image uses

    def __call__(self, images: list[Image.Image], batch: Batch) -> list[Image.Image]:
        originals = [self.originals[k] for k in self.picks(batch.iteration, len(images))]
        if self.region is not None:
            return [imgs.paste_into_region(d, o, self.region, self.mask) for d, o in zip(images, originals)]
        return [imgs.paste_over_original(d, o, self.mask) for d, o in zip(images, originals)]
