"""`sdrt txt2img --hr-*` (hires fix) and `sdrt upscale` (A1111's Extras upscale) from the command line."""
from PIL import Image, PngImagePlugin

from sdrt.cli import main


def test_txt2img_hr_options_turn_the_hires_fix_on(tmp_path, capsys):
    out = tmp_path / "hr.png"
    assert main(["txt2img", "a red circle", "-o", str(out), "--steps", "3", "--hr-scale", "1.5", "--hr-steps", "2",
                 "--hr-upscaler", "Latent (nearest-exact)", "--seed", "4", "-q"]) == 0
    with Image.open(out) as im:
        assert im.size == (96, 96)
        text = im.info["parameters"]
    assert "Size: 64x64" in text and "Hires upscale: 1.5, Hires steps: 2, Hires upscaler: Latent (nearest-exact)" in text


def test_txt2img_refuses_an_unknown_hires_upscaler(tmp_path, capsys):
    assert main(["txt2img", "x", "-o", str(tmp_path / "x.png"), "--steps", "1", "--hr-upscaler", "Nope", "-q"]) == 2
    err = capsys.readouterr().err
    assert "hr_upscaler" in err and "'Nope' is unknown" in err and "Lanczos" in err


def _source(tmp_path):
    path = tmp_path / "in.png"
    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", "a red circle\nSteps: 3, Seed: 1, Size: 40x30")
    Image.new("RGB", (40, 30), (200, 10, 10)).save(path, pnginfo=meta)
    return path


def test_upscale_by_a_factor_keeps_the_infotext_and_adds_postprocessing(tmp_path, capsys):
    out = tmp_path / "up.png"
    assert main(["upscale", str(_source(tmp_path)), "--upscaler", "Lanczos", "--scale", "2", "-o", str(out)]) == 0
    with Image.open(out) as im:
        assert im.size == (80, 56)  # A1111: int(side * scale) // 8 * 8
        assert im.info["parameters"].startswith("a red circle")
        assert im.info["postprocessing"] == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"


def test_upscale_to_a_size_crops_to_fit(tmp_path):
    out = tmp_path / "up.png"
    assert main(["upscale", str(_source(tmp_path)), "--upscaler", "Nearest", "--width", "100", "--height", "100",
                 "-o", str(out)]) == 0
    with Image.open(out) as im:
        assert im.size == (100, 100)
        assert "Postprocess crop to: 100x100" in im.info["postprocessing"]


def test_upscale_lists_and_refuses_unknown_names(tmp_path, capsys):
    assert main(["upscale", "--list", "x"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[:3] == ["None", "Lanczos", "Nearest"]
    assert main(["upscale", str(_source(tmp_path)), "--upscaler", "R-ESRGAN 4x+", "-o", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err
    assert "upscaler_1: upscaler 'R-ESRGAN 4x+' is unknown (put RealESRGAN_x4plus.pth in " in err
