"""`sdrt bench`: end-to-end and per-stage timings of txt2img for a model / backend / size / batch /
steps, with warm-up and repeats (median and spread), `--compare` of two configurations run
alternately in one process (so drift hits both alike) with their ratio, and `--sweep` of one setting
over several values (plotted by sdrt.bench_plot).

Stages are timed by wrapping the backend calls the pipeline makes: text encoding, every UNet call,
VAE decode; the sampler's own overhead is the sampling time minus the UNet calls. A timing is a
measurement, never a test assertion.
"""
from __future__ import annotations

import json
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Optional

STAGES = ("total", "text_encode", "unet", "sampler_overhead", "vae_decode")


@dataclass
class Config:
    model: str = "toy"
    backend: str = "torch"
    device: str = "cpu"
    dtype: Optional[str] = None  # a name of loading.DTYPE_NAMES; None: the backend's default
    attention: str = "sdpa"
    compile: str = "off"  # the torch backend's UNet compile mode (backends/compiled_unet.py)
    sampler_loop: str = "python"
    size: Optional[int] = None
    batch: int = 1
    steps: int = 20
    sampler: str = "Euler a"
    cfg_scale: float = 7.0

    def label(self) -> str:
        return (f"{self.model} {self.backend}/{self.device}"
                f"{'/' + self.attention if self.backend == 'torch' else ''}{'/' + self.dtype if self.dtype else ''}"
                f"{'/compile=' + self.compile if self.compile != 'off' else ''} "
                f"{self.size or 'native'}px "
                f"b{self.batch} {self.steps} steps {self.sampler}"
                f"{' (C++ loop)' if self.sampler_loop == 'cpp' else ''}")

    def overridden(self, spec: str) -> "Config":
        """A copy with `key=value,key=value` applied (the --compare syntax)."""
        values = dict(self.__dict__)
        for item in filter(None, (s.strip() for s in spec.split(","))):
            key, sep, value = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in values:
                raise ValueError(f"--compare {spec!r}: {item!r} is not key=value with a key of {', '.join(values)}")
            kind = type(values[key]) if values[key] is not None else (int if key == "size" else str)
            if not value.strip() and Config.__dataclass_fields__[key].default is None:  # "dtype=": the default
                values[key] = None
                continue
            try:
                values[key] = kind(value.strip())
            except ValueError:
                raise ValueError(f"--compare {spec!r}: {key} must be {kind.__name__}") from None
        return Config(**values)


@dataclass
class StageTimes:
    calls: dict = field(default_factory=lambda: {s: 0.0 for s in STAGES})

    def add(self, stage: str, seconds: float) -> None:
        self.calls[stage] += seconds


@contextmanager
def _timed_backend(pipe, times: StageTimes, sync):
    """Wrap the backend calls a generation makes (instance attributes; restored afterwards)."""
    backend, denoiser = pipe.backend, pipe.denoiser
    originals = (backend.encode_text, backend.vae_decode, denoiser.unet)

    def wrap(fn, stage):
        def timed(*args, **kwargs):
            sync()
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            sync()
            times.add(stage, time.perf_counter() - start)
            return out
        return timed
    backend.encode_text = wrap(originals[0], "text_encode")
    backend.vae_decode = wrap(originals[1], "vae_decode")
    denoiser.unet = wrap(originals[2], "unet")
    try:
        yield
    finally:
        backend.encode_text, backend.vae_decode, denoiser.unet = originals


def _sync_for(device: str):
    if str(device).startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return lambda: None


def _peak_memory_mb(device: str) -> float:
    if str(device).startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux; the process's peak


class Runner:
    """One configuration: the loaded pipeline and its measured runs."""

    def __init__(self, config: Config):
        from .loading import load

        self.config = config
        kwargs = {"attention": config.attention, "compile": config.compile} if config.backend == "torch" else {}
        self.pipe = load(config.model, backend=config.backend, device=config.device, dtype=config.dtype,
                         sampler_loop=config.sampler_loop, **kwargs)
        self.sync = _sync_for(config.device)
        self.runs: list[dict] = []

    def run(self, record: bool = True) -> dict:
        c = self.config
        times = StageTimes()
        with _timed_backend(self.pipe, times, self.sync):
            self.sync()
            start = time.perf_counter()
            self.pipe.txt2img(["a red circle in the top left"] * c.batch, steps=c.steps, sampler_name=c.sampler,
                              cfg_scale=c.cfg_scale, width=c.size, height=c.size, seed=1, batch_size=c.batch)
            self.sync()
            times.add("total", time.perf_counter() - start)
        t = times.calls
        sampling = t["total"] - t["text_encode"] - t["vae_decode"]
        t["sampler_overhead"] = max(0.0, sampling - t["unet"])
        result = {**t, "it_per_s": c.steps / sampling if sampling > 0 else float("inf")}
        if record:
            self.runs.append(result)
        return result

    def summary(self) -> dict:
        out = {"config": self.config.__dict__, "label": self.config.label(), "repeats": len(self.runs),
               "peak_memory_mb": round(_peak_memory_mb(self.config.device), 1)}
        for key in (*STAGES, "it_per_s"):
            values = [r[key] for r in self.runs]
            qs = statistics.quantiles(values, n=4) if len(values) >= 2 else [values[0]] * 3
            out[key] = {"median": statistics.median(values), "min": min(values), "max": max(values),
                        "iqr": qs[2] - qs[0]}
        out["unet_per_step_s"] = out["unet"]["median"] / self.config.steps
        return out


def benchmark(config: Config, *, compare: Optional[Config] = None, warmup: int = 1, repeats: int = 5) -> dict:
    runners = [Runner(config)] + ([Runner(compare)] if compare else [])
    for _ in range(warmup):
        for r in runners:
            r.run(record=False)
    for _ in range(repeats):
        for r in runners:  # alternating: drift (heat, other load) hits both alike
            r.run()
    from . import __version__

    result = {"benchmark": "sdrt bench", "sdrt": __version__, "machine": _machine(), "warmup": warmup,
              "configs": [r.summary() for r in runners]}
    if compare:
        a, b = result["configs"]
        result["ratio_b_over_a"] = {k: (b[k]["median"] / a[k]["median"] if a[k]["median"] else None)
                                    for k in (*STAGES, "it_per_s")}
    return result


def parse_sweep(spec: str, base: Config) -> tuple[str, list]:
    """`key=v1,v2,...` -> (key, typed values), e.g. `size=64,128,256` or `batch=1,2,4`."""
    key, sep, values = spec.partition("=")
    key = key.strip().replace("-", "_")
    items = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not items:
        raise ValueError(f"--sweep {spec!r}: expected key=value,value,... (e.g. size=64,128)")
    typed = [getattr(base.overridden(f"{key}={v}"), key) for v in items]  # the --compare checks and types
    return key, typed


def sweep(config: Config, key: str, values: list, *, compare: Optional[Config] = None, warmup: int = 1,
          repeats: int = 5) -> dict:
    """`benchmark` at each value of one setting (applied to both configurations under --compare)."""
    points = []
    for value in values:
        a = config.overridden(f"{key}={value}")
        b = compare.overridden(f"{key}={value}") if compare else None
        points.append({"value": value, **benchmark(a, compare=b, warmup=warmup, repeats=repeats)})
    # the configurations' labels with the swept setting shown as "*"
    labels = [replace(c, **{key: "*"}).label() for c in ([config, compare] if compare else [config])]
    return {"benchmark": "sdrt bench sweep", "sweep": {"key": key, "values": values}, "labels": labels,
            "points": points}


def format_sweep_table(result: dict) -> str:
    key = result["sweep"]["key"]
    labels = result["labels"]
    head = f"{key:<10}" + "".join(f"{'total ms':>12}{'unet ms/step':>14}{'it/s':>9}" for _ in labels)
    rows = [" | ".join(f"{chr(97 + i)}: {label}" for i, label in enumerate(labels)), head]
    for point in result["points"]:
        cells = "".join(f"{c['total']['median'] * 1e3:>12.1f}{c['unet_per_step_s'] * 1e3:>14.2f}"
                        f"{c['it_per_s']['median']:>9.2f}" for c in point["configs"])
        ratio = point.get("ratio_b_over_a", {}).get("total")
        rows.append(f"{str(point['value']):<10}{cells}" + (f"   total b/a {ratio:.3f}" if ratio else ""))
    return "\n".join(rows)


def _machine() -> dict:
    import os
    import platform

    import torch

    info = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def format_table(result: dict) -> str:
    rows = [f"{'stage':<18}" + "".join(f"{c['label'][:40]:>42}" for c in result["configs"])
            + ("   ratio b/a" if "ratio_b_over_a" in result else "")]
    for key in (*STAGES, "it_per_s"):
        unit = "it/s" if key == "it_per_s" else "ms"
        cells = []
        for c in result["configs"]:
            s = c[key]
            scale = 1.0 if key == "it_per_s" else 1e3
            cells.append(f"{s['median'] * scale:>30.2f} {unit:<4}(±{s['iqr'] * scale / 2:.2f})")
        ratio = result.get("ratio_b_over_a", {}).get(key)
        rows.append(f"{key:<18}" + "".join(f"{cell:>42}" for cell in cells)
                    + (f"{ratio:>12.3f}" if ratio is not None else ""))
    rows.append(f"{'peak memory':<18}" + "".join(f"{c['peak_memory_mb']:>36.1f} MiB  " for c in result["configs"]))
    return "\n".join(rows)


def write_json(result: dict, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
