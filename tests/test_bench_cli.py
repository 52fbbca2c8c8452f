"""`sdrt bench`: stage timings, JSON and --compare (structure and consistency; never a speed)."""
import json

import pytest

from sdrt.benchmark import Config
from sdrt.cli import main


def test_bench_compare_writes_json_and_ratios(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["bench", "--steps", "3", "--repeats", "2", "--warmup", "0", "--compare", "attention=sdrt,batch=2",
                 "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "unet" in table and "ratio b/a" in table
    result = json.loads(out.read_text())
    a, b = result["configs"]
    assert a["config"]["attention"] == "sdpa" and b["config"]["attention"] == "sdrt" and b["config"]["batch"] == 2
    for c in (a, b):
        assert c["repeats"] == 2
        assert 0 < c["unet"]["median"] <= c["total"]["max"]
        assert c["text_encode"]["median"] > 0 and c["vae_decode"]["median"] > 0 and c["it_per_s"]["median"] > 0
    assert set(result["ratio_b_over_a"]) >= {"total", "unet", "it_per_s"}


def test_compare_syntax_errors_name_the_key():
    base = Config()
    assert base.overridden("steps=4, sampler=DDIM").steps == 4
    assert base.overridden("size=128").size == 128
    with_dtype = base.overridden("backend=openvino,dtype=bf16")
    assert with_dtype.dtype == "bf16" and with_dtype.overridden("backend=onnxruntime,dtype=").dtype is None
    compiled = base.overridden("compile=reduce-overhead")
    assert compiled.compile == "reduce-overhead" and "compile=reduce-overhead" in compiled.label()
    assert "compile" not in base.label()
    with pytest.raises(ValueError, match="'colour=red' is not key=value with a key of"):
        base.overridden("colour=red")
    with pytest.raises(ValueError, match="steps must be int"):
        base.overridden("steps=many")
    assert main(["bench", "--repeats", "0"]) == 2


def test_sweep_writes_a_table_json_and_a_png_chart(tmp_path, capsys):
    from PIL import Image

    out, png = tmp_path / "s.json", tmp_path / "s.png"
    assert main(["bench", "--steps", "2", "--repeats", "1", "--warmup", "0", "--sweep", "size=32,64",
                 "--compare", "attention=sdrt", "--json", str(out), "--plot", str(png)]) == 0
    table = capsys.readouterr().out
    assert "total b/a" in table and table.count("\n32 ") + table.count("\n64 ") == 2
    result = json.loads(out.read_text())
    assert result["sweep"] == {"key": "size", "values": [32, 64]}
    assert [p["value"] for p in result["points"]] == [32, 64]
    assert [c["config"]["size"] for c in result["points"][1]["configs"]] == [64, 64]
    assert result["points"][1]["configs"][1]["config"]["attention"] == "sdrt"
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 600 and im.size[1] > 300
        # a chart, not a blank canvas: bars and lines in several colours
        assert len(im.convert("RGB").getcolors(1 << 16) or []) > 20


def test_sweep_syntax_errors_name_the_setting():
    from sdrt.benchmark import parse_sweep

    assert parse_sweep("batch=1, 2,4", Config()) == ("batch", [1, 2, 4])
    with pytest.raises(ValueError, match="expected key=value,value"):
        parse_sweep("size", Config())
    with pytest.raises(ValueError, match="size must be int"):
        parse_sweep("size=64,big", Config())
