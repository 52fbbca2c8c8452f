"""A1111's sampler and scheduler names as its API lists and accepts them: samplers by name or
alias (case-insensitive), schedulers by label ("Karras") or name ("karras", what webuiapi sends)."""
from __future__ import annotations

from typing import Optional

from ..sampling import SAMPLERS, SCHEDULERS

# A1111 sd_samplers_kdiffusion / sd_samplers_timesteps / sd_samplers_lcm aliases
SAMPLER_ALIASES: dict[str, list[str]] = {
    "DPM++ 2M": ["k_dpmpp_2m"], "DPM++ SDE": ["k_dpmpp_sde"], "DPM++ 2M SDE": ["k_dpmpp_2m_sde"],
    "DPM++ 2M SDE Heun": ["k_dpmpp_2m_sde_heun"], "DPM++ 2S a": ["k_dpmpp_2s_a"], "DPM++ 3M SDE": ["k_dpmpp_3m_sde"],
    "Euler a": ["k_euler_a", "k_euler_ancestral"], "Euler": ["k_euler"], "LMS": ["k_lms"], "Heun": ["k_heun"],
    "DPM2": ["k_dpm_2"], "DPM2 a": ["k_dpm_2_a"], "DDIM": ["ddim"], "UniPC": ["unipc"], "LCM": ["k_lcm"],
}

# A1111 sd_schedulers: label -> (name, aliases, default_rho, need_inner_model)
SCHEDULER_ITEMS: dict[str, tuple[str, list[str], float, bool]] = {
    "Automatic": ("automatic", [], -1.0, False),
    "Uniform": ("uniform", [], -1.0, True),
    "Karras": ("karras", [], 7.0, False),
    "Exponential": ("exponential", [], -1.0, False),
    "Polyexponential": ("polyexponential", [], 1.0, False),
    "SGM Uniform": ("sgm_uniform", ["SGMUniform"], -1.0, True),
    "KL Optimal": ("kl_optimal", [], -1.0, False),
    "Align Your Steps": ("align_your_steps", [], -1.0, False),
    "Simple": ("simple", [], -1.0, True),
    "Normal": ("normal", [], -1.0, True),
    "DDIM": ("ddim", [], -1.0, True),
    "Beta": ("beta", [], -1.0, True),
}
assert set(SCHEDULER_ITEMS) == set(SCHEDULERS), "every sdrt schedule has its A1111 item"

_SAMPLER_LOOKUP = {k.lower(): k for k in SAMPLERS}
_SAMPLER_LOOKUP.update({a.lower(): name for name, aliases in SAMPLER_ALIASES.items() for a in aliases})
_SCHEDULER_LOOKUP = {label.lower(): label for label in SCHEDULER_ITEMS}
_SCHEDULER_LOOKUP.update({v[0]: label for label, v in SCHEDULER_ITEMS.items()})
_SCHEDULER_LOOKUP.update({a.lower(): label for label, v in SCHEDULER_ITEMS.items() for a in v[1]})


def sampler_name(name: str) -> Optional[str]:
    """sdrt's sampler name (legacy "X Karras" names kept whole) for an A1111 name or alias; None if unknown."""
    key = name.strip().lower()
    if key in _SAMPLER_LOOKUP:
        return _SAMPLER_LOOKUP[key]
    for label in SCHEDULER_ITEMS:  # legacy "DPM++ 2M Karras": sampler + schedule in one name
        suffix = " " + label.lower()
        if key.endswith(suffix) and key[: -len(suffix)] in _SAMPLER_LOOKUP:
            return f"{_SAMPLER_LOOKUP[key[: -len(suffix)]]} {label}"
    return None


def scheduler_label(name: str) -> Optional[str]:
    return _SCHEDULER_LOOKUP.get(name.strip().lower())


def sampler_items() -> list[dict]:
    return [{"name": name, "aliases": SAMPLER_ALIASES.get(name, []), "options": {}} for name in SAMPLERS]


def scheduler_items() -> list[dict]:
    return [{"name": v[0], "label": label, "aliases": v[1] or None, "default_rho": v[2], "need_inner_model": v[3]}
            for label, v in SCHEDULER_ITEMS.items()]
