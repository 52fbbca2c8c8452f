import json
import os
import re
import subprocess
import sys

import pytest

from sdrt import _C
from sdrt.cli import main


def test_package_extension_and_export_import():
    out = subprocess.run([sys.executable, "-c", "import sdrt, sdrt._C, sdrt.export; print(sdrt._C.__name__)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "sdrt._C"


def test_info_json_reports_build_backends_and_devices(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["extension"]["cuda"] == _C.build_info()["cuda"]
    assert set(info["backends"]) == {"torch", "onnxruntime", "openvino", "tensorrt", "coremltools"}
    assert info["backends"]["torch"]["available"] is True
    assert info["devices"][0]["type"] == "cpu" and info["devices"][0]["cores"] >= 1
    if info["backends"]["openvino"]["available"]:
        import openvino

        (ov_cpu,) = [d for d in info["devices"] if d["type"] == "openvino-cpu"]
        bf16 = "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        assert ov_cpu["default_precision"] == ("bf16" if bf16 else "fp32")


def test_info_console_script_runs_offline():
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    exe = os.path.join(os.path.dirname(sys.executable), "sdrt")
    out = subprocess.run([exe, "info"], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.startswith("sdrt ")
    assert "CUDA kernels: " in out.stdout and "torch" in out.stdout


def test_info_and_help_print_only_sdrt_lines(capsys):
    """Optional backends are not imported to report them: coremltools, for one, logs a "Failed to
    load _MLModelProxy" line per prediction binding off macOS and warns about torch versions."""
    from sdrt.cli import build_parser

    env = dict(os.environ, HF_HUB_OFFLINE="1")
    exe = os.path.join(os.path.dirname(sys.executable), "sdrt")
    out = subprocess.run([exe, "info"], capture_output=True, text=True, check=True, env=env)
    assert out.stderr == ""
    own = re.compile(r"(sdrt \S+  \(Python |sdrt\._C  |extension  |backends$|devices$|  [a-z]\S* +\S)")
    for line in out.stdout.splitlines():
        assert own.match(line), line
        assert not re.search(r"Failed to load|[Ww]arning|has not been tested|Traceback", line), line
    commands = next(a for a in build_parser()._actions if hasattr(a, "choices") and a.choices).choices
    assert {"info", "txt2img", "img2img", "export", "convert", "bench"} <= set(commands)
    capsys.readouterr()
    already = set(sys.modules)
    for command in commands:  # in this process: each `sdrt X --help` subprocess would pay torch's import again
        with pytest.raises(SystemExit) as exited:
            main([command, "--help"])
        out = capsys.readouterr()
        assert exited.value.code == 0 and out.err == "" and out.out.startswith(f"usage: sdrt {command}"), command
    assert not {"coremltools", "tensorrt"} & (set(sys.modules) - already)  # help imports no optional backend


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "info" in capsys.readouterr().out


def test_models_lists_the_a1111_folders(tmp_path, capsys, monkeypatch):
    from sdrt.cli import main

    (tmp_path / "models" / "Lora" / "styles").mkdir(parents=True)
    (tmp_path / "models" / "Lora" / "styles" / "ink.safetensors").write_bytes(b"x" * 10)
    (tmp_path / "models" / "Lora" / "notes.txt").write_text("not a model")
    assert main(["models", "--models-dir", str(tmp_path), "--kind", "lora", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert [e["title"] for e in listing["lora"]] == ["styles/ink.safetensors"]
    assert listing["lora"][0]["name"] == "ink"
    monkeypatch.delenv("SDRT_MODELS_ROOT", raising=False)
    assert main(["models"]) == 2
    assert "--models-dir" in capsys.readouterr().err
