"""Fused per-step kernels of the sampler loop, from ``sdrt._C``.

Each function takes NumPy arrays or torch tensors (CPU, or CUDA when ``sdrt._C`` was built with
CUDA), all of one dtype (float32, float16, bfloat16 for torch), C-contiguous, and returns a new
array/tensor of the same kind unless ``out=`` is given (``out`` may be an input: in-place update).
Arithmetic is fp32 whatever the storage dtype. The same math written as torch ops is in
:mod:`sdrt.kernels.reference`; tests compare the two on random inputs.
"""
from __future__ import annotations

from typing import Any, Sequence

from .. import _C

__all__ = [
    "attention",
    "ancestral_step_sigmas",
    "cfg_combine",
    "dpmpp_2m_step",
    "euler_ancestral_step",
    "euler_step",
    "linear_combination",
    "scale_latents",
    "to_rgb_uint8",
    "unscale_latents",
]

ancestral_step_sigmas = _C.ancestral_step_sigmas


def _is_torch(t: Any) -> bool:
    return type(t).__module__.startswith("torch")


def _boundary(t: Any) -> Any:
    """What crosses into C++: NumPy arrays as buffers, torch tensors as DLPack capsules.

    ``to_dlpack`` makes no stream synchronisation of its own; the kernel is queued on the
    tensor's current stream instead (see ``_stream``), so ordering matches torch's own ops.
    """
    if t is None or not _is_torch(t):
        return t
    from torch.utils.dlpack import to_dlpack

    return to_dlpack(t)


def _stream(t: Any) -> int:
    if _is_torch(t) and t.is_cuda:
        import torch

        return torch.cuda.current_stream(t.device).cuda_stream
    return 0


def _empty_like(t: Any) -> Any:
    if _is_torch(t):
        import torch

        return torch.empty_like(t, memory_format=torch.contiguous_format)
    import numpy as np

    return np.empty_like(t, order="C")


def linear_combination(inputs: Sequence[Any], weights: Sequence[float], bias: float = 0.0, *,
                       out: Any = None) -> Any:
    """``bias + sum_k weights[k] * inputs[k]`` in one pass: the fused update of multi-stage samplers
    (Heun, DPM2, DPM++ 2S a) once their per-step coefficients are known."""
    if len(inputs) == 0:
        raise ValueError("linear_combination: 'inputs' must hold at least one tensor")
    out = _empty_like(inputs[0]) if out is None else out
    _C.linear_combination(_boundary(out), [_boundary(t) for t in inputs], [float(w) for w in weights], float(bias),
                          _stream(out))
    return out


def cfg_combine(uncond: Any, conds: Any, weights: Sequence[float], cfg_scale: float, *, out: Any = None) -> Any:
    """Classifier-free guidance with A1111's composable diffusion (AND):
    ``uncond + sum_i (conds[i] - uncond) * weights[i] * cfg_scale`` (Ho & Salimans 2022; Liu et al. 2022).

    ``conds`` stacks the cond predictions: shape ``(len(weights), *uncond.shape)``.
    """
    out = _empty_like(uncond) if out is None else out
    _C.cfg_combine(_boundary(out), _boundary(uncond), _boundary(conds), [float(w) for w in weights],
                   float(cfg_scale), _stream(out))
    return out


def euler_step(x: Any, denoised: Any, sigma: float, sigma_next: float, *, out: Any = None) -> Any:
    """Euler step ``x + (x - denoised) / sigma * (sigma_next - sigma)`` (Karras et al. 2022, Alg. 2)."""
    out = _empty_like(x) if out is None else out
    _C.euler_step(_boundary(out), _boundary(x), _boundary(denoised), float(sigma), float(sigma_next), _stream(out))
    return out


def euler_ancestral_step(x: Any, denoised: Any, noise: Any, sigma: float, sigma_next: float, *,
                         eta: float = 1.0, s_noise: float = 1.0, out: Any = None) -> Any:
    """k-diffusion's Euler ancestral step: Euler to ``sigma_down``, plus ``noise * s_noise * sigma_up``."""
    out = _empty_like(x) if out is None else out
    _C.euler_ancestral_step(_boundary(out), _boundary(x), _boundary(denoised), _boundary(noise), float(sigma),
                            float(sigma_next), float(eta), float(s_noise), _stream(out))
    return out


def dpmpp_2m_step(x: Any, denoised: Any, sigma: float, sigma_next: float, *, old_denoised: Any = None,
                  sigma_prev: float | None = None, out: Any = None) -> Any:
    """DPM-Solver++(2M) step (Lu et al. 2022, Alg. 2; k-diffusion ``sample_dpmpp_2m``).

    ``old_denoised`` / ``sigma_prev`` are the previous step's prediction and sigma; without them the
    step is first order, as on the first step.
    """
    out = _empty_like(x) if out is None else out
    _C.dpmpp_2m_step(_boundary(out), _boundary(x), _boundary(denoised), _boundary(old_denoised), float(sigma),
                     float(sigma_next), None if sigma_prev is None else float(sigma_prev), _stream(out))
    return out


def scale_latents(x: Any, scaling_factor: float, shift_factor: float = 0.0, *, out: Any = None) -> Any:
    """VAE latents -> diffusion space: ``(x - shift_factor) * scaling_factor``."""
    out = _empty_like(x) if out is None else out
    _C.scale_latents(_boundary(out), _boundary(x), float(scaling_factor), float(shift_factor), _stream(out))
    return out


def unscale_latents(x: Any, scaling_factor: float, shift_factor: float = 0.0, *, out: Any = None) -> Any:
    """Diffusion space -> VAE latents: ``x / scaling_factor + shift_factor``."""
    out = _empty_like(x) if out is None else out
    _C.unscale_latents(_boundary(out), _boundary(x), float(scaling_factor), float(shift_factor), _stream(out))
    return out


def to_rgb_uint8(x: Any, *, matrix: Sequence[Sequence[float]] | None = None, bias: Sequence[float] | None = None,
                 round: bool = False, out: Any = None) -> Any:  # noqa: A002 - mirrors the C++ argument
    """(N, C, H, W) values in [-1, 1] -> (N, H, W, 3) uint8 in one pass.

    Without ``matrix`` ``x`` is a decoded RGB image; with a ``(C, 3)`` matrix (and optional bias) it
    maps latents to an approximate RGB preview first (A1111's "Approx cheap" live preview). Values
    are truncated to uint8 as A1111 does (``astype(np.uint8)``) unless ``round=True`` (diffusers).
    """
    if out is None:
        shape = (x.shape[0], x.shape[2], x.shape[3], 3) if len(x.shape) == 4 else None
        if shape is None:
            raise ValueError(f"to_rgb_uint8: argument 'x' must be (N, C, H, W), got shape {tuple(x.shape)}")
        if _is_torch(x):
            import torch

            out = torch.empty(shape, dtype=torch.uint8, device=x.device)
        else:
            import numpy as np

            out = np.empty(shape, dtype=np.uint8)
    m = None if matrix is None else [[float(v) for v in row] for row in matrix]
    b = None if bias is None else [float(v) for v in bias]
    _C.to_rgb_uint8(_boundary(out), _boundary(x), m, b, bool(round), _stream(out))
    return out


def attention(q: Any, k: Any, v: Any, scale: float | None = None) -> Any:
    """softmax(q k^T * scale) v, fused (online softmax over key blocks, Dao et al. 2022): fp32 or
    bf16 on the CPU (fp32 arithmetic), fp16 / bf16 on CUDA for the head dims of
    ``sdrt._C.build_info()["cuda_attention_head_dims"]``.
    q: (..., q_len, head_dim), k and v: (..., k_len, head_dim) with the same leading dims
    (batch, heads); scale defaults to 1/sqrt(head_dim). Inputs are made contiguous (copies when
    they are views)."""
    shape = tuple(q.shape)
    if len(shape) < 2 or tuple(k.shape[:-2]) != shape[:-2] or tuple(v.shape) != tuple(k.shape):
        raise ValueError(f"attention: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}: expected "
                         "(..., q_len, d), (..., k_len, d), (..., k_len, d) with the same leading dims")

    def flat(t):
        t = t.reshape(-1, *t.shape[-2:])
        return t.contiguous() if _is_torch(t) else __import__("numpy").ascontiguousarray(t)
    qf, kf, vf = flat(q), flat(k), flat(v)
    out = _empty_like(qf)
    _C.attention(_boundary(out), _boundary(qf), _boundary(kf), _boundary(vf), None if scale is None else float(scale),
                 _stream(qf))
    return out.reshape(shape)
