"""ONNX export: a loaded model -> a self-describing folder that ``sdrt.load(folder,
backend="onnxruntime")`` runs.

Each component the model has (``specs.components_for``: SD's set, or SDXL's with its second text
encoder and the UNet's added inputs) is traced with torch's TorchScript-based exporter
(``dynamo=False``: the path diffusers / optimum have exported SD UNets with for years; the
torch.export-based one needs onnxscript and is the later move), checked with onnx.checker, and
written with its weights as external data when it passes protobuf's 2 GB limit. fp16 is made from
the fp32 graph by onnxruntime's float16 converter (inputs/outputs stay fp32 so the backend never
converts). The folder's ``sdrt_export.json`` names the files, the specs' I/O, the model facts the
pipeline needs and a content hash of (weights, LoRAs merged, options): a second export of the same
thing is a no-op. With ``openvino_ir=True`` each graph also gets an OpenVINO IR beside it
(export/openvino_ir.py), which the openvino backend prefers.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from sdrt.backends import manifests

from .common import (check_components, check_writable, controlnet_facts, controlnets_for_export, model_facts,
                     require_torch_pipeline, with_loras)
from .specs import PROFILES, components_for, model_widths

MANIFEST = manifests.ONNX
FORMAT = manifests.FORMAT
OPSET = 17
EXTERNAL_DATA_ABOVE = 1_800_000_000  # protobuf's limit is 2 GB for the whole file


@dataclasses.dataclass(frozen=True)
class GraphOptions:
    """How each component's files are written: fp16 weights; an OpenVINO IR beside the ONNX graph."""
    fp16: bool = False
    openvino_ir: bool = False


def to_onnx(pipe, out_dir: str, *, fp16: bool = False, loras: Sequence | None = None,
            components: Sequence[str] | None = None, progress: Optional[Callable[[str], None]] = None,
            in_place: bool = False, controlnets: Sequence[str] = (), openvino_ir: bool = False) -> dict:
    """Export a loaded torch-backend Pipeline (``sdrt.load(model)``) to `out_dir`; returns the
    manifest. `loras` [(name_or_path, weight), ...] are merged first, into a copy of `pipe` unless
    `in_place` (which saves a model's worth of memory when the unmerged model is not needed).
    `controlnets`: ControlNet names or paths (as a unit's model) exported beside the model, each to
    controlnets/<name>/; the UNet is then exported as `unet_controlled`, taking their residuals.
    `openvino_ir`: also an OpenVINO IR of every graph (needs openvino), for the openvino backend."""
    from sdrt import __version__

    require_torch_pipeline(pipe, exporter="to_onnx")
    specs = components_for(pipe)
    names = check_components(components or specs, specs)
    check_writable(out_dir)
    say = progress or (lambda message: None)
    pipe = with_loras(pipe, loras, say, in_place=in_place)
    controls = controlnets_for_export(pipe, controlnets, names)
    options = {"fp16": bool(fp16), "opset": OPSET, "components": names, "format": FORMAT,
               "loras": [list(map(str, lora)) for lora in loras or []],
               "controlnets": [title for _, _, title in controls], "openvino_ir": bool(openvino_ir)}
    graph = GraphOptions(fp16=bool(fp16), openvino_ir=bool(openvino_ir))
    content_hash = _content_hash(pipe, options, [model for _, model, _ in controls])
    previous = manifests.try_read_manifest(out_dir, MANIFEST)
    if previous is not None and previous.get("content_hash") == content_hash and all(
            os.path.isfile(os.path.join(out_dir, f)) for f in _graph_files(previous)):
        say("unchanged since the last export (same weights and options): nothing to do")
        return previous
    manifest = {"format": FORMAT, "sdrt_version": __version__, "content_hash": content_hash,
                "precision": "fp16" if fp16 else "fp32", "opset": OPSET, "components": {},
                "model": model_facts(pipe), "loras": options["loras"],
                "profile": PROFILES.get(pipe.info.family, PROFILES["sd1"]),
                "model_sigmas": [float(s) for s in pipe.denoiser.sigmas],  # the discrete noise schedule
                # widths the engine profiles need (tensorrt_export.shape_profile)
                "widths": model_widths(pipe)}
    for name in names:
        spec = specs[name]
        if name == "unet" and controls:
            manifest["components"]["unet_controlled"], control_facts = _export_controlled(pipe, controls, out_dir,
                                                                                           graph, say)
            manifest.update(control_facts)
            continue
        manifest["components"][name] = _export_and_measure(pipe, spec, out_dir, graph, say)
        if spec.token_lookup:
            _save_token_embedding(getattr(pipe, name), os.path.join(out_dir, name), fp16)
        manifest.update(spec.facts(pipe) if spec.facts else {})
    manifests.write_manifest(out_dir, MANIFEST, manifest)  # last: a half export is never taken as done
    # folders of an earlier export that this one no longer writes (e.g. unet/ now unet_controlled/); a
    # file dropped from a folder still written (an IR no longer asked for) went with its stale files
    for folder in _graph_folders(previous or {}) - _graph_folders(manifest):
        if folder not in ("", ".") and not os.path.isabs(folder) and not folder.startswith(".."):
            shutil.rmtree(os.path.join(out_dir, folder), ignore_errors=True)
    return manifest


def _graph_files(manifest: dict) -> list[str]:
    """The graph files a manifest names: its components' and its ControlNets'."""
    entries = [*manifest.get("components", {}).values(), *manifest.get("controlnets", {}).values()]
    return [e[key] for e in entries if isinstance(e, dict) for key in ("file", "openvino_file") if key in e]


def _graph_folders(manifest: dict) -> set[str]:
    return {os.path.normpath(os.path.dirname(f)) for f in _graph_files(manifest)}


def _export_controlled(pipe, controls, out_dir: str, graph: GraphOptions,
                       say: Callable[[str], None]) -> tuple[dict, dict]:
    """The UNet taking ControlNet residuals and each ControlNet (export.controlnet_specs): the
    UNet's manifest entry, and the ControlNets' entries with the residual layout the backend feeds
    zeros of in steps without control."""
    from .controlnet_specs import controlnet_components, pair, residual_layout, residual_names

    entries = {}
    for key, model, title in controls:
        modules, specs = pair(pipe.unet, model), controlnet_components(pipe.unet, model)
        spec = dataclasses.replace(specs["controlnet"], name=os.path.join("controlnets", key))
        entries[key] = {**_export_and_measure(modules, spec, out_dir, graph, say), **controlnet_facts(model, title)}
    first = controls[0][1]
    unet = _export_and_measure(pair(pipe.unet, first), controlnet_components(pipe.unet, first)["unet_controlled"],
                               out_dir, graph, say)
    layout = residual_layout(first)
    residuals = [{"name": n, "channels": c, "factor": f} for n, (c, f) in zip(residual_names(len(layout)), layout)]
    return unet, {"controlnets": entries, "controlnet_residuals": residuals}


def _export_and_measure(pipe, spec, out_dir: str, graph: GraphOptions, say: Callable[[str], None]) -> dict:
    """One component into out_dir/<name>/model.onnx (and openvino.xml), checked; its manifest entry."""
    import onnx

    started = time.perf_counter()
    path = os.path.join(out_dir, spec.name, "model.onnx")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _export_component(pipe, spec, path, graph.fp16)
    onnx.checker.check_model(path)  # by path: works past 2 GB with external data
    entry = {"file": os.path.join(spec.name, "model.onnx"),
             "inputs": [t.name for t in spec.inputs], "outputs": [t.name for t in spec.outputs],
             "parity_max_abs_error": parity_error(pipe, spec, path)}
    if graph.openvino_ir:
        from .openvino_ir import ir_parity_error, write_openvino_ir

        ir = write_openvino_ir(pipe, spec, os.path.dirname(path), fp16=graph.fp16)
        entry.update(openvino_file=os.path.join(spec.name, os.path.basename(ir)),
                     openvino_parity_max_abs_error=ir_parity_error(pipe, spec, ir))
    entry.update(bytes=_size(os.path.dirname(path)), seconds=round(time.perf_counter() - started, 2))
    say(f"{spec.name}: {entry['bytes'] / 2**20:.1f} MiB in {entry['seconds']} s, "
        f"ONNX Runtime vs torch max |error| {entry['parity_max_abs_error']:.2e}"
        + (f", OpenVINO IR {entry['openvino_parity_max_abs_error']:.2e}" if graph.openvino_ir else ""))
    return entry


def _save_token_embedding(text_encoder, folder: str, fp16: bool) -> None:
    """The token lookup runs outside the graph (textual inversion replaces rows): its table beside
    the text encoder's graph, as token_embedding.npy."""
    table = text_encoder.get_input_embeddings().weight.detach().float().cpu().numpy()
    np.save(os.path.join(folder, "token_embedding.npy"), table.astype(np.float16 if fp16 else np.float32))


def export_component(pipe, name: str, path: str, *, fp16: bool = False) -> None:
    """One component of `pipe` (anything with .unet / .text_encoder / .vae as the spec needs) to
    `path`, checked."""
    import onnx

    specs = components_for(pipe)
    if name not in specs:
        raise ValueError(f"component {name!r} unknown; valid: {', '.join(specs)}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    _export_component(pipe, specs[name], path, fp16)
    onnx.checker.check_model(path)


def export_controlnet(unet, controlnet, out_dir: str, *, fp16: bool = False) -> dict:
    """`controlnet` and `unet` taking its residuals (export.controlnet_specs) to
    out_dir/controlnet/model.onnx and out_dir/unet_controlled/model.onnx, checked; returns
    {component: max |ORT - torch| on the specs' sample inputs}."""
    import onnx

    from .controlnet_specs import controlnet_components, pair

    modules, errors = pair(unet, controlnet), {}
    for name, spec in controlnet_components(unet, controlnet).items():
        path = os.path.join(out_dir, name, "model.onnx")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _export_component(modules, spec, path, fp16)
        onnx.checker.check_model(path)
        errors[name] = parity_error(modules, spec, path)
    return errors


def _export_component(pipe, spec, path: str, fp16: bool) -> None:
    import warnings

    import onnx

    from sdrt.backends.attention import attention_processors

    module = spec.wrap(pipe).eval().float()
    sample = spec.sample(pipe, torch.float32)
    unet = getattr(pipe, "unet", None) if spec.name.startswith("unet") else None
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
    """Max |ORT - torch| over every output of the exported component on fresh random sample inputs
    (fp32 torch)."""
    import onnxruntime as ort

    torch.manual_seed(1234)
    sample = spec.sample(pipe, torch.float32)
    with torch.no_grad():
        want = spec.wrap(pipe).eval().float()(*sample)
    want = want if isinstance(want, tuple) else (want,)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run(None, {t.name: v.numpy() for t, v in zip(spec.inputs, sample)})
    return max(float(np.abs(g.astype(np.float32) - w.numpy()).max()) for g, w in zip(got, want))


def _content_hash(pipe, options: dict, extra_modules: Sequence = ()) -> str:
    """sha256 over every weight of the model's modules and `extra_modules` (names, dtypes, bytes)
    and the options."""
    h = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    modules = (getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None), pipe.unet, pipe.vae,
               *extra_modules)
    for module in (m for m in modules if m is not None):
        # config-only settings change the graph too (a ControlNet's pooling or control channel order)
        config = getattr(module, "config", {})
        config = config.to_dict() if hasattr(config, "to_dict") else dict(config)  # transformers' / diffusers'
        h.update(json.dumps(config, sort_keys=True, default=str).encode())
        for name, tensor in sorted(module.state_dict().items()):
            h.update(name.encode())
            h.update(str(tensor.dtype).encode())
            h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _size(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
