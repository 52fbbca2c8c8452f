"""Infotext written as A1111 writes it, and read back with A1111's parsing rules."""
import subprocess
import sys

from PIL import Image

from sdrt.pipelines.infotext import create_infotext, parse_infotext
from sdrt.pipelines.png import save_png

PARAMS = {"Steps": 20, "Sampler": "DPM++ 2M", "Schedule type": "Karras", "CFG scale": 7, "Seed": 1,
          "Size": "512x768", "Model hash": None, "Model": "toy", "Lora hashes": "a: 1, b: 2", "RNG": "CPU"}


def test_create_infotext_quotes_and_skips():
    text = create_infotext("a cat,\nsecond line", "blurry", PARAMS)
    assert text == ('a cat,\nsecond line\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M, Schedule type: '
                    'Karras, CFG scale: 7, Seed: 1, Size: 512x768, Model: toy, Lora hashes: "a: 1, b: 2", RNG: CPU')
    assert create_infotext("p", "", {"Steps": 1}) == "p\nSteps: 1"


def test_parse_round_trip():
    parsed = parse_infotext(create_infotext("a cat,\nsecond line", "blurry\nugly", PARAMS))
    assert parsed["Prompt"] == "a cat,\nsecond line" and parsed["Negative prompt"] == "blurry\nugly"
    assert parsed["Sampler"] == "DPM++ 2M" and parsed["Size-1"] == "512" and parsed["Size-2"] == "768"
    assert parsed["Lora hashes"] == "a: 1, b: 2" and "Model hash" not in parsed


def test_last_line_with_few_pairs_is_prompt_text():
    parsed = parse_infotext("a photo\nstyle: oil")
    assert parsed == {"Prompt": "a photo\nstyle: oil", "Negative prompt": ""}


def test_png_info_cli(tmp_path):
    path = tmp_path / "x.png"
    save_png(Image.new("RGB", (8, 8)), str(path), create_infotext("red circle", "", PARAMS))
    res = subprocess.run([sys.executable, "-m", "sdrt.cli", "png-info", str(path), "--json"],
                         capture_output=True, text=True)
    assert res.returncode == 0 and '"Prompt": "red circle"' in res.stdout
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    res = subprocess.run([sys.executable, "-m", "sdrt.cli", "png-info", str(tmp_path / "plain.png")],
                         capture_output=True, text=True)
    assert res.returncode == 1 and "has no generation parameters" in res.stderr
    (tmp_path / "bad.png").write_bytes(b"not an image")
    res = subprocess.run([sys.executable, "-m", "sdrt.cli", "png-info", str(tmp_path / "bad.png")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "not a readable image" in res.stderr and "Traceback" not in res.stderr
