"""JobHooks: what a caller or a feature adds to one generation job, at the stages' extension
points (shared/DESIGN.md): progress and interrupt callbacks, extra UNet inputs per call,
job-scoped model patches, the batching policy, where each batch starts, and post-processors."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from ..sampling.batching import BatchPolicy
from ..sampling.unet_inputs import ExtraInput
from .job import Batch
from .patches import JobPatch
from .postprocess import PostProcessor
from .start_point import StartPoint


@dataclass
class JobHooks:
    # after every model call: {"i", "total", "x", "sigma", "denoised", "iteration", "n_iter"}
    callback: Optional[Callable[[dict], None]] = None
    # asked before each model call; once true the batch is decoded from its latest prediction and
    # no further batch runs (A1111's interrupt) / the job goes on with the next batch (skip)
    should_stop: Optional[Callable[[], bool]] = None
    should_skip: Optional[Callable[[], bool]] = None
    extra_inputs: Sequence[ExtraInput] = ()        # per-row UNet inputs (ControlNet residuals, ...)
    patches: Sequence[JobPatch] = ()               # applied after the job's LoRAs, undone in reverse
    post_processors: Sequence[PostProcessor] = ()  # after paste-back, in order
    batching: Optional[BatchPolicy] = None         # None: the pipeline's (per image when batch-invariant)
    # where each batch starts instead of noise / the init images (a hires pass, the previous frame)
    start_point: Optional[Callable[[Batch], StartPoint]] = None
    # the hires fix's second model (hr_checkpoint_name, loaded by the caller); None: the same model
    hires_pipeline: Optional[object] = None
    # the refiner (refiner_checkpoint, loaded by the caller); None: the pipeline loads and keeps it
    refiner_pipeline: Optional[object] = None
