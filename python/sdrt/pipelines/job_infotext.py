"""The infotext stage: a job's batch -> A1111's generation-parameters text per image."""
from __future__ import annotations

from typing import Callable, Optional

from .. import __version__
from .infotext import create_infotext
from .infotext import infotext_number as _num
from .job import Batch, Job


def batch_infotexts(job: Job, batch: Batch, model, strength: Optional[float],
                    per_image: Optional[Callable[[int], dict]] = None) -> list[str]:
    """`model`: the pipeline's ModelInfo; `strength`: the denoising strength the batch started at
    (None from pure noise); `per_image(j)`: values of job.infotext's keys for image j of the batch.
    Keys in A1111's order; None values are left out."""
    p = job.params
    texts = []
    for j, (prompt, negative, seed) in enumerate(zip(job.written_prompts, job.negatives, batch.seeds)):
        params = {"Steps": p.steps, "Sampler": job.sampler.name, "Schedule type": job.schedule_label,
                  "CFG scale": _num(p.cfg_scale), "Seed": seed, "Size": f"{p.width}x{p.height}",
                  "Model hash": model.hash, "Model": model.name, "VAE hash": model.vae_hash, "VAE": model.vae_name,
                  "Variation seed": batch.subseeds[j] if batch.subseeds else None,
                  "Variation seed strength": _num(p.subseed_strength) if batch.subseeds else None,
                  "Denoising strength": _num(strength) if strength is not None else None,
                  "Clip skip": p.clip_skip if p.clip_skip > 1 else None,
                  "ENSD": int(p.eta_noise_seed_delta) if p.eta_noise_seed_delta else None,
                  "RNG": "CPU",  # A1111's default is GPU; CPU is what reproduces across machines
                  **{k: _num(v) for k, v in job.sampler.eta_infotext(p.eta).items()},
                  **job.infotext, **(per_image(j) if per_image else {}),
                  "Version": f"sdrt {__version__}"}
        texts.append(create_infotext(prompt, negative, params))
    return texts
