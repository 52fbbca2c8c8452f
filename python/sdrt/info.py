"""Facts about this installation: the build of ``sdrt._C``, the backends that import, the devices."""
from __future__ import annotations

import importlib
import os
import platform
from typing import Any

# Backend name -> the module that provides it.
BACKEND_MODULES = {
    "torch": "torch",
    "onnxruntime": "onnxruntime",
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


def _backend(module_name: str) -> dict[str, Any]:
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or a broken install raising anything else
        return {"available": False, "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:200]}
    return {"available": True, "version": getattr(module, "__version__", "unknown")}


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
        import onnxruntime

        devices.append({"type": "onnxruntime-providers", "providers": onnxruntime.get_available_providers()})
    return devices


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
            lines.append(f"  cuda:{d['index']:<7} {d['name']}, {d['memory_gib']} GiB, sm_{d['compute_capability'].replace('.', '')}")
        elif d["type"] == "onnxruntime-providers":
            lines.append(f"  onnxruntime  providers: {', '.join(d['providers'])}")
        else:
            lines.append(f"  {d['type']:<12} {d['name']}")
    return "\n".join(lines)
