"""Noise schedules: the model's discrete sigmas and the sigma sequences samplers step through.

Each ``get_sigmas_*`` returns ``n + 1`` decreasing sigmas ending in 0 (k-diffusion's convention).
"""
from __future__ import annotations

import math

import torch


def discrete_sigmas(betas: torch.Tensor) -> torch.Tensor:
    """sigma_t = sqrt((1 - alphabar_t) / alphabar_t) for each training timestep (Ho et al. 2020 -> VE form)."""
    alphas_cumprod = torch.cumprod(1.0 - betas.double(), dim=0)
    return ((1 - alphas_cumprod) / alphas_cumprod).sqrt()


def scaled_linear_betas(beta_start: float = 0.00085, beta_end: float = 0.012, steps: int = 1000) -> torch.Tensor:
    """SD1.x/SD2.x/SDXL's 'scaled_linear' schedule: betas linear in sqrt space."""
    return torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float64) ** 2


def betas_from_config(config: dict) -> torch.Tensor:
    kind = config.get("beta_schedule", "scaled_linear")
    start, end, steps = config.get("beta_start", 0.00085), config.get("beta_end", 0.012), config.get("num_train_timesteps", 1000)
    if kind == "scaled_linear":
        return scaled_linear_betas(start, end, steps)
    if kind == "linear":
        return torch.linspace(start, end, steps, dtype=torch.float64)
    raise ValueError(f"scheduler config: beta_schedule={kind!r} is not supported; expected 'scaled_linear' or 'linear'")


def append_zero(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, x.new_zeros([1])])


def get_sigmas_karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. 2022, eq. 5: sigmas evenly spaced in sigma^(1/rho)."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    min_inv, max_inv = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return append_zero((max_inv + ramp * (min_inv - max_inv)) ** rho)


def get_sigmas_exponential(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Sigmas evenly spaced in log sigma."""
    return append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64).exp())


def get_sigmas_polyexponential(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> torch.Tensor:
    """k-diffusion's polyexponential schedule: log sigma follows a polynomial ramp (rho 1 = exponential)."""
    ramp = torch.linspace(1, 0, n, dtype=torch.float64) ** rho
    return append_zero(torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min)))


def get_sigmas_sgm_uniform(n: int, denoiser) -> torch.Tensor:
    """SGM Uniform (A1111 sd_schedulers): n timesteps evenly spaced from t(sigma_max), excluding t(sigma_min)."""
    start = denoiser.sigma_to_t(torch.tensor(denoiser.sigma_max))
    end = denoiser.sigma_to_t(torch.tensor(denoiser.sigma_min))
    t = torch.linspace(float(start), float(end), n + 1)[:-1]
    return append_zero(denoiser.t_to_sigma(t).double())


def get_sigmas_simple(n: int, denoiser) -> torch.Tensor:
    """Simple (A1111): every (1000 / n)-th model sigma from the top."""
    sigmas = denoiser.sigmas
    stride = len(sigmas) / n
    return append_zero(torch.tensor([float(sigmas[-(1 + int(i * stride))]) for i in range(n)], dtype=torch.float64))


def get_sigmas_normal(n: int, denoiser) -> torch.Tensor:
    """Normal (A1111): n timesteps evenly spaced from t(sigma_max) to t(sigma_min) inclusive."""
    start = denoiser.sigma_to_t(torch.tensor(denoiser.sigma_max))
    end = denoiser.sigma_to_t(torch.tensor(denoiser.sigma_min))
    return append_zero(denoiser.t_to_sigma(torch.linspace(float(start), float(end), n)).double())


def get_sigmas_ddim(n: int, denoiser) -> torch.Tensor:
    """DDIM (A1111): model sigmas at a fixed stride from index 1, reversed (Song et al. 2021 spacing)."""
    sigmas = denoiser.sigmas
    stride = max(len(sigmas) // n, 1)
    picked = [float(sigmas[i]) for i in range(1, len(sigmas), stride)][::-1]
    return append_zero(torch.tensor(picked, dtype=torch.float64))


def get_sigmas_beta(n: int, sigma_min: float, sigma_max: float, alpha: float = 0.6, beta: float = 0.6) -> torch.Tensor:
    """Beta (A1111, Lee et al. 2024 "Beta Sampling is All You Need"): sigma_min + ppf * (sigma_max -
    sigma_min) at the Beta(alpha, beta) quantiles of 1 - linspace(0, 1, n). The quantile function is
    scipy's."""
    from scipy import stats

    q = 1 - torch.linspace(0, 1, n, dtype=torch.float64)
    ppf = torch.tensor(stats.beta.ppf(q.numpy(), alpha, beta), dtype=torch.float64)
    return append_zero(sigma_min + ppf * (sigma_max - sigma_min))


# Align Your Steps (Sabour et al. 2024), NVIDIA's published 10-step sigmas for SD1.5 and SDXL.
AYS_SIGMAS = {
    "sd1": (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029),
    "sdxl": (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029),
}


def get_sigmas_align_your_steps(n: int, family: str = "sd1") -> torch.Tensor:
    """The published schedule, log-linearly interpolated to n sigmas when n != 11 (A1111)."""
    table = torch.tensor(AYS_SIGMAS[family], dtype=torch.float64)
    if n == len(table):
        return append_zero(table)
    logs = table.flip(0).log()
    xs = torch.linspace(0, 1, len(table), dtype=torch.float64)
    new_xs = torch.linspace(0, 1, n, dtype=torch.float64)
    idx = torch.searchsorted(xs, new_xs, right=True).clamp(1, len(xs) - 1)
    x0, x1, y0, y1 = xs[idx - 1], xs[idx], logs[idx - 1], logs[idx]
    interp = y0 + (y1 - y0) * (new_xs - x0) / (x1 - x0)
    return append_zero(interp.exp().flip(0))


def get_sigmas_kl_optimal(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """KL-optimal schedule (Sabour et al. 2024, "Align Your Steps", eq. 9; A1111 sd_schedulers
    kl_optimal): sigmas evenly spaced in arctan(sigma). n + 1 values ending at sigma_min, with no
    appended zero, as A1111 computes it."""
    a_min, a_max = math.atan(sigma_min), math.atan(sigma_max)
    frac = torch.arange(n + 1, dtype=torch.float64) / n
    return torch.tan(frac * a_min + (1 - frac) * a_max)


def a1111_timesteps(n: int, total: int = 1000) -> torch.Tensor:
    """A1111's timestep samplers' model timesteps, ascending: range(0, total, total // n) + 1,
    clipped to total - 1 (sd_samplers_timesteps get_timesteps). n + 1 of them when total % n
    leaves room, as there."""
    return torch.clamp(torch.arange(0, total, total // n) + 1, 0, total - 1)


def get_timestep_sigmas(n: int, denoiser) -> torch.Tensor:
    """The sigmas of A1111's timestep samplers (DDIM): its timesteps from the largest down, no
    appended zero. The sampler makes one call fewer than there are sigmas and stops at t = 1,
    where A1111's DDIM stops too."""
    return denoiser.sigmas.double()[a1111_timesteps(n, len(denoiser.sigmas)).flip(0)]


def get_unipc_timestep_sigmas(n: int, denoiser, t_start: float | None = None) -> torch.Tensor:
    """The sigmas of A1111's UniPC (its uni_pc.py, skip_type 'time_uniform' over the discrete VP
    schedule): n + 1 model times evenly from `t_start` (default the last training step) down to 0,
    log(alpha) interpolated linearly in time between the training steps (NoiseScheduleVP
    'discrete'), sigma = sqrt(1 - alpha^2) / alpha. No appended zero: A1111's UniPC stops at t = 0
    (sigma_min) and decodes that."""
    sig = denoiser.sigmas.double()
    log_alpha = -0.5 * torch.log1p(sig**2)  # alpha_bar = 1 / (1 + sigma^2)
    tau = torch.linspace(len(sig) - 1 if t_start is None else t_start, 0, n + 1, dtype=torch.float64)
    lo = tau.floor().long().clamp(max=len(sig) - 2)
    frac = tau - lo
    la = log_alpha[lo] * (1 - frac) + log_alpha[lo + 1] * frac
    return torch.sqrt(torch.expm1(-2 * la))


# img2img on A1111's timestep samplers (CompVisSampler.sample_img2img): of the ascending timesteps
# T, the sampler runs on T[:t_enc] while the init latent is noised to T[t_enc], one step above
# (A1111's behaviour, kept for faithful images). Each returns (sigmas to run, sigma of the noise).

def ddim_img2img_sigmas(steps: int, t_enc: int, denoiser) -> tuple[torch.Tensor, float]:
    """DDIM: the model is called at T[t_enc - 1] ... T[1] and the result is taken at T[0]."""
    sig, asc = denoiser.sigmas.double(), a1111_timesteps(steps, len(denoiser.sigmas))
    return sig[asc[:max(t_enc, 1)].flip(0)], float(sig[asc[t_enc]])


def unipc_img2img_sigmas(steps: int, t_enc: int, denoiser) -> tuple[torch.Tensor, float]:
    """UniPC: t_enc steps evenly in time from T[t_enc - 1] (A1111's t_start = T[-1] / 1000 + 1 / 1000
    in its continuous time) down to 0."""
    sig, asc = denoiser.sigmas.double(), a1111_timesteps(steps, len(denoiser.sigmas))
    if t_enc == 0:  # no step to take (A1111 fails there): the noised init, decoded
        return sig[asc[:1]], float(sig[asc[0]])
    return get_unipc_timestep_sigmas(t_enc, denoiser, float(asc[t_enc - 1])), float(sig[asc[t_enc]])
