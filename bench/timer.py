"""Shared timing helper for sdrt benchmarks: warm-up, repeats, median and spread.

A timing is never a test assertion; benchmarks report ratios against a baseline measured in the
same process, alternating the two so drift (thermal, other load) hits both alike.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable


@dataclass
class Timing:
    median_s: float
    min_s: float
    max_s: float
    iqr_s: float
    repeats: int

    @classmethod
    def of(cls, samples: list[float]) -> "Timing":
        qs = statistics.quantiles(samples, n=4) if len(samples) >= 2 else [samples[0]] * 3
        return cls(statistics.median(samples), min(samples), max(samples), qs[2] - qs[0], len(samples))


def _default_sync() -> None:
    return None


def time_pair(a: Callable[[], object], b: Callable[[], object], *, warmup: int = 3, repeats: int = 20,
              min_time_s: float = 0.002, sync: Callable[[], None] = _default_sync) -> tuple[Timing, Timing]:
    """Times `a` and `b` alternately. Each sample runs the callable `inner` times so that one sample
    lasts at least `min_time_s`; the reported times are per call."""
    for _ in range(warmup):
        a(), b()
    sync()
    start = time.perf_counter()
    a()
    sync()
    once = max(time.perf_counter() - start, 1e-7)
    inner = max(1, int(min_time_s / once))
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, out in ((a, samples[0]), (b, samples[1])):
            sync()
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            sync()
            out.append((time.perf_counter() - start) / inner)
    return Timing.of(samples[0]), Timing.of(samples[1])


def machine_description() -> dict[str, object]:
    desc: dict[str, object] = {"platform": platform.platform(), "python": platform.python_version(),
                               "cpu_count": os.cpu_count()}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            desc["cpu"] = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    try:
        import torch

        desc["torch"] = torch.__version__
        desc["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            desc["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return desc


def write_results(path: str, payload: dict) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o))
        f.write("\n")
