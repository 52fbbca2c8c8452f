"""ONNX export: a loaded model -> a self-describing folder that ``sdrt.load(folder,
backend="onnxruntime")`` runs.

Each component of ``specs.COMPONENTS`` is traced with torch's TorchScript-based exporter
(``dynamo=False``: the path diffusers / optimum have exported SD UNets with for years; the
torch.export-based one needs onnxscript and is the later move), checked with onnx.checker, and
written with its weights as external data when it passes protobuf's 2 GB limit. fp16 is made from
the fp32 graph by onnxruntime's float16 converter (inputs/outputs stay fp32 so the backend never
converts). The folder's ``sdrt_export.json`` names the files, the specs' I/O, the model facts the
pipeline needs and a content hash of (weights, LoRAs merged, options): a second export of the same
thing is a no-op.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from .specs import COMPONENTS, PROFILES

MANIFEST = "sdrt_export.json"
FORMAT = 1
OPSET = 17
EXTERNAL_DATA_ABOVE = 1_800_000_000  # protobuf's limit is 2 GB for the whole file


def to_onnx(model, out_dir: str, *, fp16: bool = False, loras: Sequence | None = None,
            components: Sequence[str] | None = None, models_dir: str | None = None,
            progress: Optional[Callable[[str], None]] = None) -> dict:
    """Export `model` ("toy", a diffusers folder, a checkpoint file or name, or a loaded Pipeline)
    to `out_dir`; returns the manifest. `loras` [(name_or_path, weight), ...] are merged first (a
    loaded Pipeline is copied, not changed)."""
    import onnx

    from sdrt import __version__
    from sdrt.loading import load

    names = list(components or COMPONENTS)
    unknown = [n for n in names if n not in COMPONENTS]
    if unknown:
        raise ValueError(f"components: {', '.join(unknown)} unknown; valid: {', '.join(COMPONENTS)}")
    _check_writable(out_dir)
    say = progress or (lambda message: None)
    pipe = load(model, models_dir=models_dir) if isinstance(model, (str, os.PathLike)) else model
    if not hasattr(pipe, "unet") or pipe.unet is None:
        raise ValueError("model: expected a model name/path or a Pipeline on the torch backend")
    if loras:
        pipe = copy.deepcopy(pipe) if not isinstance(model, (str, os.PathLike)) else pipe
        say(f"merging {', '.join(pipe.networks.merge(loras))}")
    options = {"fp16": bool(fp16), "opset": OPSET, "components": names, "format": FORMAT,
               "loras": [list(map(str, lora)) for lora in loras or []]}
    content_hash = _content_hash(pipe, options)
    previous = _read_manifest(out_dir)
    if previous is not None and previous.get("content_hash") == content_hash and all(
            os.path.isfile(os.path.join(out_dir, c["file"])) for c in previous["components"].values()):
        say("unchanged since the last export (same weights and options): nothing to do")
        return previous
    manifest = {"format": FORMAT, "sdrt_version": __version__, "content_hash": content_hash, "precision":
                "fp16" if fp16 else "fp32", "opset": OPSET, "components": {}, "model": _model_facts(pipe),
                "loras": options["loras"],
                "profile": PROFILES.get(pipe.info.family, PROFILES["sd1"])}
    manifest["model_sigmas"] = [float(s) for s in pipe.denoiser.sigmas]  # the discrete noise schedule
    # widths the engine profiles need (tensorrt_export.shape_profile)
    manifest["widths"] = {"context_width": int(pipe.unet.config.cross_attention_dim),
                          "text_width": int(pipe.text_encoder.config.hidden_size)}
    for name in names:
        spec = COMPONENTS[name]
        started = time.perf_counter()
        path = os.path.join(out_dir, name, "model.onnx")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _export_component(pipe, spec, path, fp16)
        onnx.checker.check_model(path)  # by path: works past 2 GB with external data
        manifest["components"][name] = {
            "file": os.path.join(name, "model.onnx"),
            "inputs": [t.name for t in spec.inputs], "outputs": [t.name for t in spec.outputs],
            "bytes": _size(os.path.dirname(path)), "seconds": round(time.perf_counter() - started, 2),
            "parity_max_abs_error": parity_error(pipe, spec, path)}
        entry = manifest["components"][name]
        say(f"{name}: {entry['bytes'] / 2**20:.1f} MiB in {entry['seconds']} s, "
            f"ONNX Runtime vs torch max |error| {entry['parity_max_abs_error']:.2e}")
    if "text_encoder" in names:  # the token lookup runs outside the graph (textual inversion replaces rows)
        table = pipe.text_encoder.get_input_embeddings().weight.detach().float().cpu().numpy()
        np.save(os.path.join(out_dir, "text_encoder", "token_embedding.npy"), table.astype(np.float16 if fp16
                                                                                            else np.float32))
        manifest["text_layers"] = int(pipe.text_encoder.config.num_hidden_layers)
        manifest["text_width"] = int(pipe.text_encoder.config.hidden_size)
    tmp = os.path.join(out_dir, MANIFEST + ".partial")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
    os.replace(tmp, os.path.join(out_dir, MANIFEST))  # written last: a half export is never taken as done
    return manifest


def export_component(pipe, name: str, path: str, *, fp16: bool = False) -> None:
    """One component of `pipe` (anything with .unet / .text_encoder / .vae as the spec needs) to
    `path`, checked."""
    import onnx

    if name not in COMPONENTS:
        raise ValueError(f"component {name!r} unknown; valid: {', '.join(COMPONENTS)}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    _export_component(pipe, COMPONENTS[name], path, fp16)
    onnx.checker.check_model(path)


def _export_component(pipe, spec, path: str, fp16: bool) -> None:
    import warnings

    import onnx

    from sdrt.backends.attention import attention_processors

    module = spec.wrap(pipe).eval().float()
    sample = spec.sample(pipe, torch.float32)
    unet = getattr(pipe, "unet", None) if spec.name == "unet" else None
    # torch's own attention is what ONNX knows (a UNet loaded with attention="sdrt" traces SDPA here)
    with attention_processors(unet, None), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer chatter about Python-side shape checks
        torch.onnx.export(module, sample, path, dynamo=False, opset_version=OPSET,
                          input_names=[t.name for t in spec.inputs], output_names=[t.name for t in spec.outputs],
                          dynamic_axes=spec.dynamic_axes)
    if fp16:
        from onnxruntime.transformers.float16 import convert_float_to_float16
        from onnxruntime.transformers.onnx_model import OnnxModel

        # types of every tensor first (the converter must leave e.g. Resize's scales in fp32); by
        # path, because in-memory shape inference serialises the model, which protobuf refuses past 2 GB
        inferred = path + ".inferred"
        onnx.shape_inference.infer_shapes_path(path, inferred)
        model = onnx.load(inferred)
        os.remove(inferred)
        model = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True)
        OnnxModel(model).topological_sort()  # the converter appends its input casts after their users
    else:
        model = onnx.load(path)
    for stale in os.listdir(os.path.dirname(path)):  # weights of an earlier export
        if stale != os.path.basename(path):
            os.remove(os.path.join(os.path.dirname(path), stale))
    large = sum(len(t.raw_data) for t in model.graph.initializer) > EXTERNAL_DATA_ABOVE
    onnx.save_model(model, path, save_as_external_data=large, all_tensors_to_one_file=True,
                    location="model.onnx.data" if large else None)


def parity_error(pipe, spec, path: str) -> float:
    """Max |ORT - torch| of the exported component on fresh random sample inputs (fp32 torch)."""
    import onnxruntime as ort

    torch.manual_seed(1234)
    sample = spec.sample(pipe, torch.float32)
    with torch.no_grad():
        want = spec.wrap(pipe).eval().float()(*sample).numpy()
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run(None, {t.name: v.numpy() for t, v in zip(spec.inputs, sample)})[0]
    return float(np.abs(got.astype(np.float32) - want).max())


def _model_facts(pipe) -> dict:
    info = pipe.info
    return {"name": info.name, "scaling_factor": info.scaling_factor, "default_size": info.default_size,
            "latent_channels": info.latent_channels, "unet_in_channels": info.unet_in_channels,
            "prediction_type": info.prediction_type, "family": info.family, "hash": info.hash}


def _content_hash(pipe, options: dict) -> str:
    """sha256 over every weight of the three modules (names, dtypes, bytes) and the options."""
    h = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for module in (pipe.text_encoder, pipe.unet, pipe.vae):
        for name, tensor in sorted(module.state_dict().items()):
            h.update(name.encode())
            h.update(str(tensor.dtype).encode())
            h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _read_manifest(out_dir: str) -> Optional[dict]:
    try:
        with open(os.path.join(out_dir, MANIFEST), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _check_writable(out_dir: str) -> None:
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise PermissionError(f"out_dir={out_dir!r}: cannot create it ({exc.strerror}); choose a writable folder") \
            from None
    if not os.access(out_dir, os.W_OK):
        raise PermissionError(f"out_dir={out_dir!r}: not writable; choose a writable folder")


def _size(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
