"""The manifest files of export folders: their names, the format version, reading and writing.

An exporter (sdrt.export) writes a folder and its manifest last; a backend reads the manifest
first. Both import the names from here, so the export stage depends on the backends package and
never the other way round.
"""
from __future__ import annotations

import json
import os
from typing import Optional

ONNX = "sdrt_export.json"        # sdrt.export.to_onnx -> the onnxruntime backend
TENSORRT = "sdrt_tensorrt.json"  # sdrt.export.to_tensorrt -> the tensorrt backend
COREML = "sdrt_coreml.json"      # sdrt.export.to_coreml -> Core ML runtimes (macOS)
FORMAT = 1

# manifest -> (what a folder with it is, how to make one): the error for a folder without it
_KINDS = {
    ONNX: ("an sdrt ONNX export", "`sdrt export MODEL --to onnx -o DIR`"),
    TENSORRT: ("an sdrt TensorRT engine folder", "sdrt.export.to_tensorrt(onnx_dir, out_dir) from an ONNX export"),
    COREML: ("an sdrt Core ML export", "`sdrt export MODEL --to coreml -o DIR`"),
}


def read_manifest(folder: str, name: str) -> dict:
    """The manifest `name` of `folder`, refused with what to run when it is missing or of another
    format (a folder from a newer sdrt must not be half-understood)."""
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        kind, make = _KINDS[name]
        raise ValueError(f"{folder}: not {kind} (no {name}); make one with {make}")
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: export format {manifest.get('format')!r}; this sdrt reads format {FORMAT}")
    return manifest


def try_read_manifest(folder: str, name: str) -> Optional[dict]:
    """The manifest, or None when there is none or it does not parse (an earlier export to reuse)."""
    try:
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_manifest(folder: str, name: str, manifest: dict) -> None:
    """Write through a temporary file and rename, so a folder whose export was interrupted never
    looks finished."""
    tmp = os.path.join(folder, name + ".partial")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
    os.replace(tmp, os.path.join(folder, name))
