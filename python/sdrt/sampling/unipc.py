"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
Diffusion Models"): the multistep UniP predictor and UniC corrector in data-prediction form, written
in sigma space (x = x_vp / alpha, lambda = -log sigma, so the alpha factors of the paper's eqs. 5-8
drop out).

Per step s0 -> t with h = lambda_t - lambda_s0 and hh = -h:
    x_t = (sigma_t / sigma_s0) x - expm1(hh) m0 - B(h) sum_k rho_k D_k,   D_k = (m_k - m0) / r_k
with B(h) = hh ("bh1") or expm1(hh) ("bh2") and rho solving the order conditions R rho = b (eq. 8).
The corrector re-applies the step from s0 with the model's prediction at the predicted point
included (rho_c), without a new model call: the next step's prediction comes from the uncorrected
point, as in the paper's Algorithm 2 and diffusers' UniPCMultistepScheduler. The first steps warm
up at lower order, and the final step is first order (lower_order_final), as both do.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .. import kernels
from .samplers import Callback, Denoiser, NoiseSource, _report, _sigma_batch


def _coefficients(hh: float, rks: list[float], order: int, variant: str) -> tuple[float, float, np.ndarray, np.ndarray]:
    """(h_phi_1, B(h), R, b) of UniPC's order conditions for the given ratios r_k (last one 1)."""
    h_phi_1 = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    b_h = hh if variant == "bh1" else math.expm1(hh)
    rows, b, factorial = [], [], 1
    for i in range(1, order + 1):
        rows.append([r ** (i - 1) for r in rks])
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return h_phi_1, b_h, np.array(rows, dtype=np.float64), np.array(b, dtype=np.float64)


@torch.no_grad()
def sample_unipc(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback = None,
                 noise: NoiseSource = None, order: int = 3, variant: str = "bh1") -> torch.Tensor:
    """UniPC multistep (orders 1-3; A1111's defaults: order 3, 'bh1'). Deterministic: `noise` is unused."""
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"UniPC variant={variant!r}; valid: bh1, bh2")
    if not 1 <= order <= 3:
        raise ValueError(f"UniPC order={order}; valid: 1, 2, 3")
    s = sigmas.tolist()
    n = len(s) - 1
    lam = [-math.log(v) if v > 0 else math.inf for v in s]
    x = x.clone()
    outputs: list[torch.Tensor] = []   # x0 predictions at the last `order` points (newest last)
    points: list[int] = []             # their sigma indices
    last_x, last_order = None, 0
    for i in range(n):
        m = denoiser(x, _sigma_batch(x, s[i])).contiguous()
        _report(callback, i, n, x, s[i], m)
        if last_x is not None:  # UniC: correct the step points[-1] -> i with m included
            x = _corrector(last_x, m, outputs, points, lam, s, i, last_order, variant)
        outputs = (outputs + [m])[-order:]
        points = (points + [i])[-order:]
        this_order = min(order, n - i, len(outputs))  # warm-up and lower_order_final
        last_x, last_order = x, this_order
        x = _predictor(x, outputs, points, lam, s, i, this_order, variant)
    return x


def _predictor(x, outputs, points, lam, s, i, order, variant):
    m0 = outputs[-1]
    if s[i + 1] == 0:  # h = inf: x_t = m0 (first order by lower_order_final)
        return m0.clone()
    h = lam[i + 1] - lam[i]
    rks = [(lam[points[-(k + 1)]] - lam[i]) / h for k in range(1, order)] + [1.0]
    h_phi_1, b_h, R, b = _coefficients(-h, rks, order, variant)
    inputs, weights = [x, m0], [s[i + 1] / s[i], -h_phi_1]
    if order >= 2:
        rhos = np.array([0.5]) if order == 2 else np.linalg.solve(R[:-1, :-1], b[:-1])
        _add_history(inputs, weights, outputs, rks, rhos, b_h, order)
    return kernels.linear_combination(inputs, weights)


def _add_history(inputs, weights, outputs, rks, rhos, b_h, order) -> None:
    """Append - B(h) sum_k rho_k (m_k - m0) / r_k over the older predictions m_k (inputs[1] is m0)."""
    for k in range(1, order):
        c = b_h * rhos[k - 1] / rks[k - 1]
        inputs.append(outputs[-(k + 1)])
        weights.append(-c)
        weights[1] += c


def _corrector(x_prev, m_t, outputs, points, lam, s, i, order, variant):
    """UniC for the step from sigma index points[-1] to i, of the order the predictor used."""
    j = points[-1]
    m0 = outputs[-1]
    h = lam[i] - lam[j]
    rks = [(lam[points[-(k + 1)]] - lam[j]) / h for k in range(1, order)] + [1.0]
    h_phi_1, b_h, R, b = _coefficients(-h, rks, order, variant)
    rhos = np.array([0.5]) if order == 1 else np.linalg.solve(R, b)
    inputs, weights = [x_prev, m0, m_t], [s[i] / s[j], -h_phi_1, 0.0]
    _add_history(inputs, weights, outputs, rks, rhos, b_h, order)
    weights[1] += b_h * rhos[-1]   # - B(h) rho_c (m_t - m0)
    weights[2] -= b_h * rhos[-1]
    return kernels.linear_combination(inputs, weights)
