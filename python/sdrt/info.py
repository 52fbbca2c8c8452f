"""Facts about this installation: the build of ``sdrt._C``, the backends installed, the devices.

Optional backends are looked up in the installed packages' metadata, not imported: importing
them is slow and some print warnings on import (coremltools off macOS), which would bury the
facts this command exists to show.
"""
from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import platform
from typing import Any

# Backend name -> the module that provides it.
BACKEND_MODULES = {
    "torch": "torch",
    "onnxruntime": "onnxruntime",
    "openvino": "openvino",
    "tensorrt": "tensorrt",
    "coremltools": "coremltools",
}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def _distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _backend(module_name: str) -> dict[str, Any]:
    """Whether `module_name` is installed and its distribution's version, without importing it."""
    try:
        found = importlib.util.find_spec(module_name) is not None
    except (ImportError, ValueError) as exc:  # a broken install
        return {"available": False, "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:200]}
    if not found:
        return {"available": False, "error": "not installed"}
    # the distribution may be named otherwise (onnxruntime-gpu, tensorrt-cu12)
    names = _distributions().get(module_name, []) + [module_name]
    for name in names:
        try:
            return {"available": True, "version": importlib.metadata.version(name)}
        except importlib.metadata.PackageNotFoundError:
            continue
    return {"available": True, "version": "unknown"}


def _devices(backends: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    devices: list[dict[str, Any]] = [{"type": "cpu", "name": _cpu_name(), "cores": os.cpu_count()}]
    if backends["torch"]["available"]:
        import torch

        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                devices.append({"type": "cuda", "index": i, "name": p.name,
                                "memory_gib": round(p.total_memory / 2**30, 1),
                                "compute_capability": f"{p.major}.{p.minor}"})
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            devices.append({"type": "mps", "name": "Apple Metal (MPS)"})
    if backends["onnxruntime"]["available"]:
        try:  # its providers are only known to the library itself (it imports quietly)
            import onnxruntime

            providers = onnxruntime.get_available_providers()
        except Exception as exc:  # installed but broken: say so instead of failing the whole report
            providers = [f"(import failed: {type(exc).__name__})"]
        devices.append({"type": "onnxruntime-providers", "providers": providers})
    if backends["openvino"]["available"]:
        devices.append(_openvino_cpu())
    return devices


def _openvino_cpu() -> dict[str, Any]:
    """What OpenVINO's CPU plugin can compute in here, hence the openvino backend's default precision."""
    try:
        import openvino

        from .backends.openvino_backend import cpu_has_bf16

        core = openvino.Core()
        capabilities, bf16 = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")), cpu_has_bf16(core)
    except Exception as exc:  # installed but broken: say so instead of failing the whole report
        return {"type": "openvino-cpu", "capabilities": [f"(failed: {type(exc).__name__})"], "default_precision": None}
    return {"type": "openvino-cpu", "capabilities": capabilities, "default_precision": "bf16" if bf16 else "fp32"}


def collect_info() -> dict[str, Any]:
    import sdrt

    try:
        from sdrt import _C

        build = dict(_C.build_info())
    except ImportError as exc:
        build = {"error": f"sdrt._C failed to import: {exc}"}
    backends = {name: _backend(mod) for name, mod in BACKEND_MODULES.items()}
    return {
        "sdrt": sdrt.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "extension": build,
        "backends": backends,
        "devices": _devices(backends),
    }


def format_info(info: dict[str, Any]) -> str:
    ext = info["extension"]
    lines = [f"sdrt {info['sdrt']}  (Python {info['python']}, {info['platform']})"]
    if "error" in ext:
        lines.append(f"extension   {ext['error']}")
    else:
        cuda = f"yes (architectures {ext['cuda_architectures']})" if ext["cuda"] else "no"
        lines.append(f"sdrt._C     {ext['version']}; CUDA kernels: {cuda}; OpenMP: {'yes' if ext['openmp'] else 'no'}")
    lines.append("backends")
    for name, b in info["backends"].items():
        state = f"yes  {b['version']}" if b["available"] else f"no   ({b['error']})"
        lines.append(f"  {name:<12} {state}")
    lines.append("devices")
    for d in info["devices"]:
        if d["type"] == "cpu":
            lines.append(f"  cpu          {d['name']}, {d['cores']} cores")
        elif d["type"] == "cuda":
            sm = d["compute_capability"].replace(".", "")
            lines.append(f"  cuda:{d['index']:<7} {d['name']}, {d['memory_gib']} GiB, sm_{sm}")
        elif d["type"] == "onnxruntime-providers":
            lines.append(f"  onnxruntime  providers: {', '.join(d['providers'])}")
        elif d["type"] == "openvino-cpu":
            lines.append(f"  openvino     CPU: {', '.join(d['capabilities'])}; "
                         f"--backend openvino computes in {d['default_precision'] or '?'} by default")
        else:
            lines.append(f"  {d['type']:<12} {d['name']}")
    return "\n".join(lines)
