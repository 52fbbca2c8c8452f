"""TensorRT engines from an ONNX export: optimization profiles from the export specs, fp16, a
timing cache, and refittable engines whose weights (a LoRA swap) are replaced by name without a
rebuild.

TensorRT cannot be installed on this project's machines (no GPU in CI; the wheel is too large for
the lent GPU machine), so ``build_engine`` and ``refit_engine`` are written against the documented
TensorRT 10 Python API (Builder, OnnxParser, IOptimizationProfile, BuilderConfig with FP16 / REFIT
flags and a timing cache, Refitter.set_named_weights) behind an import guard, and are NOT
exercised here. What needs no TensorRT is tested: the shape profiles, the run-time range check,
the engine cache key and the torch -> ONNX weight-name map a refit needs.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Mapping, Optional

import numpy as np

from sdrt.backends import manifests
from sdrt.backends.exported import Profile, Shape, check_in_profile  # noqa: F401  (the backend checks at run time)

from .specs import PROFILES, TOKENS, components_for_family

MANIFEST = manifests.TENSORRT


# axes of one size per model -> the model fact (manifest "model" + "widths") that gives it; the text
# encoders' "width" is their embedding width (the UNet's "width" is the latent width)
_MODEL_AXES = {"channels": "unet_in_channels", "context": "context_width", "pooled": "pooled_width",
               "time_ids": "added_time_ids"}
_TEXT_WIDTHS = {"text_encoder": "text_width", "text_encoder_2": "text_width_2"}


def shape_profile(component: str, model: Mapping, *, family: str | None = None,
                  batch: tuple[int, int] | None = None, size: tuple[int, int] | None = None,
                  text_chunks: tuple[int, int] | None = None) -> Profile:
    """(min, opt, max) shapes of each input of `component` for an engine: batch counts images
    times the CFG doubling, sizes are pixels (latents are 1/8), text lengths whole 77-token chunks.
    `model` holds the export manifest's model facts (family, channels, SDXL's time-id count) plus
    its widths (specs.model_widths); the family picks SD's or SDXL's specs and default ranges."""
    family = family or model.get("family", "sd1")
    ranges = dict(PROFILES.get(family, PROFILES["sd1"]))
    ranges.update({k: v for k, v in (("batch", batch), ("size", size), ("text_chunks", text_chunks)) if v})
    dims = _axis_ranges(ranges, int(model.get("default_size", 512)))
    facts = {**_MODEL_AXES, **({"width": _TEXT_WIDTHS[component]} if component in _TEXT_WIDTHS else {})}
    profile: Profile = {}
    for spec in components_for_family(family)[component].inputs:
        per_axis = []
        for axis in spec.dims:
            if isinstance(axis, int):
                per_axis.append((axis,) * 3)
            elif axis in facts:
                if not model.get(facts[axis]):
                    raise ValueError(f"{component}: input {spec.name!r} needs {facts[axis]} in the model facts "
                                     f"(has {', '.join(sorted(model))})")
                per_axis.append((int(model[facts[axis]]),) * 3)
            else:
                per_axis.append(dims[axis])
        profile[spec.name] = tuple(tuple(a[i] for a in per_axis) for i in range(3))
    return profile


def _axis_ranges(ranges: Mapping, default_size: int) -> dict:
    """(min, opt, max) of the axes that vary per call, checked."""
    (b0, b1), (s0, s1), (c0, c1) = ranges["batch"], ranges["size"], ranges["text_chunks"]
    for name, (lo, hi) in (("batch", (b0, b1)), ("size", (s0, s1)), ("text_chunks", (c0, c1))):
        if not 1 <= lo <= hi:
            raise ValueError(f"{name}={(lo, hi)}: need 1 <= min <= max")
    if s0 % 64 or s1 % 64:
        raise ValueError(f"size={(s0, s1)}: pixel sizes must be multiples of 64 (latents of multiples of 8)")
    opt_size = min(max(default_size, s0), s1)
    return {"batch": (b0, min(max(2, b0), b1), b1), "height": (s0 // 8, opt_size // 8, s1 // 8),
            "width": (s0 // 8, opt_size // 8, s1 // 8), "image_height": (s0, opt_size, s1),
            "image_width": (s0, opt_size, s1), "tokens": (TOKENS * c0, TOKENS * c0, TOKENS * c1)}


def engine_cache_key(onnx_sha256: str, profile: Profile, *, fp16: bool, refittable: bool,
                     tensorrt_version: str, device: str) -> str:
    """An engine is reusable only for the same graph, profile, precision, TensorRT and GPU."""
    payload = json.dumps({"onnx": onnx_sha256, "profile": profile, "fp16": fp16, "refit": refittable,
                          "trt": tensorrt_version, "device": device}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def refit_name_map(state_dict: Mapping[str, "np.ndarray"], onnx_model) -> dict[str, tuple[str, bool]]:
    """torch parameter name -> (ONNX initializer name, stored transposed?), found by value.

    The TorchScript exporter keeps most parameter names but folds linear weights into
    transposed MatMul constants with generated names (onnx::MatMul_123); matching values recovers
    the mapping a refit needs (TensorRT's Refitter sets weights by the ONNX initializer name).
    Parameters whose values are not unique (e.g. all-ones norms at init) are left out: a LoRA never
    touches those."""
    from onnx import numpy_helper

    by_hash: dict[bytes, list[str]] = {}
    for init in onnx_model.graph.initializer:
        array = numpy_helper.to_array(init)
        by_hash.setdefault(_digest(array), []).append(init.name)
    mapping: dict[str, tuple[str, bool]] = {}
    for name, value in state_dict.items():
        value = np.asarray(value)
        for transposed, candidate in ((False, value), (True, value.T if value.ndim == 2 else None)):
            if candidate is None:
                continue
            hits = by_hash.get(_digest(np.ascontiguousarray(candidate)), [])
            if len(hits) == 1:
                mapping[name] = (hits[0], transposed)
                break
    return mapping


def _digest(array: np.ndarray) -> bytes:
    return hashlib.sha1(str(array.dtype).encode() + str(array.shape).encode()
                        + np.ascontiguousarray(array).tobytes()).digest()


def _tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise RuntimeError("TensorRT is not installed (pip install 'sdrt[tensorrt]' on a machine with an NVIDIA GPU); "
                           "sdrt's ONNX export runs on ONNX Runtime without it") from None
    return trt


def build_engine(onnx_path: str, engine_path: str, profile: Profile, *, fp16: bool = True, refittable: bool = True,
                 timing_cache: Optional[str] = None, workspace_gb: float = 8.0) -> None:
    """Build and serialise an engine (TensorRT 10 API). Not exercised in this project's CI."""
    trt = _tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(onnx_path):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{onnx_path}: TensorRT could not parse it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * 2**30))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if refittable:
        config.set_flag(trt.BuilderFlag.REFIT)
    cache = None
    if timing_cache:
        data = open(timing_cache, "rb").read() if _exists(timing_cache) else b""
        cache = config.create_timing_cache(data)
        config.set_timing_cache(cache, ignore_mismatch=False)
    opt = builder.create_optimization_profile()
    for name, (lo, mid, hi) in profile.items():
        opt.set_shape(name, lo, mid, hi)
    config.add_optimization_profile(opt)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"{onnx_path}: TensorRT failed to build an engine (see its log above)")
    with open(engine_path, "wb") as f:
        f.write(serialized)
    if cache is not None:
        with open(timing_cache, "wb") as f:
            f.write(cache.serialize())


def refit_engine(engine, name_map: Mapping[str, tuple[str, bool]], state_dict: Mapping[str, "np.ndarray"]) -> int:
    """Swap weights in a deserialised refittable engine by name (e.g. after merging a different
    LoRA into the torch module); returns how many were set. Not exercised in this project's CI."""
    trt = _tensorrt()
    refitter = trt.Refitter(engine, trt.Logger(trt.Logger.WARNING))
    count = 0
    for name, (onnx_name, transposed) in name_map.items():
        value = np.asarray(state_dict[name])
        value = np.ascontiguousarray(value.T if transposed else value)
        if not refitter.set_named_weights(onnx_name, trt.Weights(value)):
            raise RuntimeError(f"refit: TensorRT refused the weights of {name!r} ({onnx_name})")
        count += 1
    if not refitter.refit_cuda_engine():
        missing = refitter.get_missing_weights()
        raise RuntimeError(f"refit: weights still missing: {', '.join(missing[:5])}")
    return count


def _exists(path: str) -> bool:
    return os.path.isfile(path)


def plan_engines(onnx_dir: str, *, fp16: bool = True, batch: tuple[int, int] | None = None,
                 size: tuple[int, int] | None = None, text_chunks: tuple[int, int] | None = None,
                 tensorrt_version: str = "?", device: str = "?") -> dict:
    """What to build from an ONNX export: per component its profile, engine file and cache key,
    plus what the backend needs (model facts, noise schedule, text layers). Needs no TensorRT."""
    onnx_manifest = manifests.read_manifest(onnx_dir, manifests.ONNX)
    if onnx_manifest.get("precision") != "fp32":
        raise ValueError(f"{onnx_dir}: build engines from an fp32 ONNX export (TensorRT makes its own fp16)")
    facts = {**onnx_manifest["model"], **onnx_manifest["widths"]}
    plan = {"format": manifests.FORMAT, "fp16": fp16, "model": onnx_manifest["model"],
            "model_sigmas": onnx_manifest["model_sigmas"], "text_layers": onnx_manifest.get("text_layers"),
            "onnx": os.path.abspath(onnx_dir), "components": {}}
    ranges = dict(batch=batch, size=size, text_chunks=text_chunks)
    controlled = controlled_profiles(shape_profile("unet", facts, **ranges), onnx_manifest["controlnet_residuals"]) \
        if "controlnet_residuals" in onnx_manifest else {}

    def engine(component: dict, folder: str, profile: Profile) -> dict:
        onnx_file = os.path.join(onnx_dir, component["file"])
        key = engine_cache_key(_file_sha256(onnx_file), profile, fp16=fp16, refittable=True,
                               tensorrt_version=tensorrt_version, device=device)
        return {"onnx": onnx_file, "engine": os.path.join(folder, f"{key}.plan"), "profile": profile,
                "inputs": component["inputs"], "outputs": component["outputs"], "cache_key": key}

    for name, component in onnx_manifest["components"].items():
        profile = controlled["unet_controlled"] if name == "unet_controlled" else shape_profile(name, facts, **ranges)
        plan["components"][name] = engine(component, name, profile)
    if controlled:  # ControlNets exported with the model (sdrt export --controlnet)
        plan["controlnet_residuals"] = onnx_manifest["controlnet_residuals"]
        plan["controlnets"] = {
            key: {**engine(c, os.path.join("controlnets", key), controlled["controlnet"]), "title": c["title"],
                  "global_pool_conditions": c.get("global_pool_conditions", False)}
            for key, c in onnx_manifest["controlnets"].items()}
    return plan


def controlled_profiles(unet_profile: Profile, residuals: list[dict]) -> dict[str, Profile]:
    """The profiles of `unet_controlled` and of a ControlNet, from the UNet's: each residual at
    1/factor of the latent size with its channels, the control image at 8x the latent size, one
    conditioning scale per row."""
    sample = unet_profile["sample"]  # (min, opt, max) of (batch, channels, height, width)

    def each(shape_of) -> tuple[Shape, Shape, Shape]:
        return tuple(shape_of(*shape) for shape in sample)

    taken = {r["name"]: each(lambda b, _, h, w, r=r: (b, r["channels"], -(-h // r["factor"]), -(-w // r["factor"])))
             for r in residuals}
    control = {**unet_profile, "controlnet_cond": each(lambda b, _, h, w: (b, 3, h * 8, w * 8)),
               "conditioning_scale": each(lambda b, *_: (b,))}
    return {"unet_controlled": {**unet_profile, **taken}, "controlnet": control}


def to_tensorrt(onnx_dir: str, out_dir: str, *, fp16: bool = True, batch=None, size=None, text_chunks=None,
                progress=None) -> dict:
    """Build (or reuse, by cache key) one refittable engine per component of an ONNX export and
    write the folder the tensorrt backend loads. Needs TensorRT; not exercised in this project."""
    import shutil

    import torch

    trt = _tensorrt()
    say = progress or (lambda message: None)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "?"
    plan = plan_engines(onnx_dir, fp16=fp16, batch=batch, size=size, text_chunks=text_chunks,
                        tensorrt_version=trt.__version__, device=device)
    os.makedirs(out_dir, exist_ok=True)
    graphs = {**plan["components"], **{f"controlnets/{k}": c for k, c in plan.get("controlnets", {}).items()}}
    for name, component in graphs.items():
        engine = os.path.join(out_dir, component["engine"])
        if os.path.isfile(engine):
            say(f"{name}: cached engine {component['cache_key']}")
            continue
        os.makedirs(os.path.dirname(engine), exist_ok=True)
        build_engine(component["onnx"], engine, component["profile"], fp16=fp16,
                     timing_cache=os.path.join(out_dir, "timing.cache"))
        say(f"{name}: built {engine}")
    for name in plan["components"]:  # the text encoders' token tables (the lookup runs outside)
        table = os.path.join(onnx_dir, name, "token_embedding.npy")
        if os.path.isfile(table):
            os.makedirs(os.path.join(out_dir, name), exist_ok=True)
            shutil.copyfile(table, os.path.join(out_dir, name, "token_embedding.npy"))
    manifests.write_manifest(out_dir, MANIFEST, plan)
    return plan


def _file_sha256(path: str) -> str:
    """Of an ONNX file and its external weights (model.onnx.data beside it, past 2 GB), so an
    engine of other weights is never reused."""
    h = hashlib.sha256()
    for part in (path, path + ".data"):
        if not os.path.isfile(part):
            continue
        with open(part, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()
