"""The sampler loop in C++ (sdrt._C.sample_loop) for the samplers that are pure step math, with the
Python samplers' calling convention. The Python samplers (samplers.py, sde_samplers.py) stay the
reference; the tests hold the two to the same results."""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .. import _C
from ..kernels import _stream
from .samplers import _sigma_batch

# A1111 sampler label -> (C++ loop method, default eta)
NATIVE_METHODS = {"Euler": ("euler", None), "Euler a": ("euler_ancestral", 1.0), "DDIM": ("euler_ancestral", 0.0),
                  "DPM++ 2M": ("dpmpp_2m", None), "DPM++ 2M SDE": ("dpmpp_2m_sde", 1.0),
                  "DPM++ 2M SDE Heun": ("dpmpp_2m_sde_heun", 1.0), "Heun": ("heun", None), "DPM2": ("dpm_2", None),
                  "LMS": ("lms", None)}


@torch.no_grad()
def sample_native(name: str, denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                  callback: Optional[Callable[[dict], None]] = None, noise: Optional[Callable[[], torch.Tensor]] = None,
                  noise_sampler: Optional[Callable[[float, float], torch.Tensor]] = None,
                  eta: float | None = None, s_noise: float = 1.0) -> torch.Tensor:
    """`denoiser(x, sigma_batch) -> denoised` as for the Python samplers; `noise()` (or, for the SDE
    samplers, `noise_sampler(sigma, sigma_next)`, e.g. A1111's Brownian tree) for the stochastic ones.
    No churn (s_churn = 0) in the C++ loop."""
    if name not in NATIVE_METHODS:
        raise ValueError(f"sampler {name!r} has no C++ loop; valid: {', '.join(NATIVE_METHODS)}")
    method, default_eta = NATIVE_METHODS[name]
    steps = len(sigmas) - 1

    def model(x_, sigma):
        return denoiser(x_, _sigma_batch(x_, sigma))

    def report(i, total, x_, sigma, denoised):
        callback({"i": i, "total": total, "x": x_, "sigma": sigma, "denoised": denoised})

    if noise_sampler is not None:
        draw = lambda a, b: noise_sampler(a, b).to(x)  # noqa: E731
    elif noise is not None:
        draw = lambda a, b: noise().to(x)  # noqa: E731
    else:
        draw = lambda a, b: torch.randn_like(x)  # noqa: E731
    return _C.sample_loop(method, x, [float(s) for s in sigmas.tolist()], model, draw,
                          report if callback is not None else None,
                          float(eta if eta is not None else (default_eta if default_eta is not None else 1.0)),
                          float(s_noise), _stream(x)) if steps > 0 else x.clone()
