"""The export stage's public names and its place in the data flow: ``sdrt.export.to_onnx`` /
``to_tensorrt`` / ``to_coreml`` resolve on first use without importing the optional runtimes, the
exporters take loaded models (never the loader or the pipelines), and the backends never import
the export stage."""
import ast
import inspect
import os
import pathlib
import subprocess
import sys

import pytest

import sdrt
import sdrt.export

EXPORT_DIR = pathlib.Path(sdrt.export.__file__).parent
BACKENDS_DIR = pathlib.Path(sdrt.__file__).parent / "backends"


def imported_modules(path: pathlib.Path) -> set[str]:
    """Absolute names of every module `path` imports, at any depth (lazy imports included)."""
    package = "sdrt.export" if path.parent == EXPORT_DIR else "sdrt.backends"
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_public_exporters_resolve_without_importing_optional_runtimes():
    code = ("import sys, sdrt.export as e\n"
            "fns = [e.to_onnx, e.to_tensorrt, e.to_coreml]\n"
            "print(sorted(m for m in ('onnx', 'onnxruntime', 'coremltools', 'tensorrt') if m in sys.modules))\n"
            "print(' '.join(f.__module__ for f in fns))\n"
            "print(sorted(set(dir(e)) & {'to_onnx', 'to_tensorrt', 'to_coreml'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stderr == ""
    loaded, modules, listed = out.stdout.splitlines()
    assert loaded == "[]"
    assert modules == "sdrt.export.onnx_export sdrt.export.tensorrt_export sdrt.export.coreml_export"
    assert listed == "['to_coreml', 'to_onnx', 'to_tensorrt']"
    assert set(sdrt.export.__all__) == {"to_onnx", "to_tensorrt", "to_coreml"}
    with pytest.raises(AttributeError, match="has no attribute 'to_openvino'"):
        sdrt.export.to_openvino


def test_exporters_take_a_loaded_model():
    for fn in (sdrt.export.to_onnx, sdrt.export.to_coreml):
        params = inspect.signature(fn).parameters
        assert list(params)[:2] == ["pipe", "out_dir"] and "models_dir" not in params, fn.__name__
        with pytest.raises(TypeError, match=rf"{fn.__name__}: takes a loaded model, not 'toy'"):
            fn("toy", os.devnull)
    assert list(inspect.signature(sdrt.export.to_onnx).parameters)[2] == "fp16"


def test_data_flows_one_way_between_export_and_backends():
    for path in sorted(EXPORT_DIR.glob("*.py")):
        bad = {m for m in imported_modules(path)
               if m.startswith(("sdrt.loading", "sdrt.pipelines")) or m == "sdrt.load"}
        assert not bad, f"{path.name} imports {bad}: exporters take loaded models"
    for path in sorted(BACKENDS_DIR.glob("*.py")):
        bad = {m for m in imported_modules(path) if m.startswith("sdrt.export")}
        assert not bad, f"backends/{path.name} imports {bad}: the export stage depends on backends, not back"
