"""GenerationParams: validation in one place, the wrappers' keywords, the CLI built from it, the
docs table generated from it."""
import dataclasses
import os

import pytest
from PIL import Image

from sdrt.cli import build_parser
from sdrt.cli_generation import params_from_args
from sdrt.pipelines import GenerationParams, Pipeline
from sdrt.pipelines.params import defaults_table, server_defaults

DOCS = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "parameters.md")


@pytest.mark.parametrize("kwargs,match", [
    (dict(steps=0), r"^steps=0; must be >= 1$"),
    (dict(n_iter=0), r"^n_iter=0; must be >= 1$"),
    (dict(width=100), r"^width=100; must be a positive multiple of 8$"),
    (dict(height=8.5), r"^height=8.5; must be a positive multiple of 8$"),
    (dict(cfg_scale=float("inf")), r"^cfg_scale=inf; must be a finite number$"),
    (dict(eta="high"), r"^eta='high'; must be a number$"),
    (dict(denoising_strength=-0.1), r"^denoising_strength=-0.1; must be in \[0, 1\] \(img2img, and the hires"),
    (dict(hr_scale=9), r"^hr_scale=9; must be in \[1, 8\]"),
    (dict(enable_hr=True, denoising_strength=0), r"^denoising_strength=0 with enable_hr"),
    (dict(init_images=[Image.new("RGB", (8, 8))], hr_scale=3.0), r"^hr_scale=3.0; a txt2img parameter"),
    (dict(resize_mode=3), r"^resize_mode=3; must be in \[0, 2\] \(0 just resize"),
    (dict(mask_blur=65), r"^mask_blur=65; must be in \[0, 64\]"),
    (dict(negative_prompt=["a", "b"]), r"^negative_prompt: expected a string or a list of 1 strings"),
    (dict(init_images=[Image.new("RGB", (8, 8)), "x.png"]), r"^init_images: expected a PIL image"),
    (dict(mask=Image.new("L", (8, 8))), r"^mask: given without init_images"),
    (dict(init_images=Image.new("RGB", (8, 8)), mask="m.png"), r"^mask: expected a PIL image"),
])
def test_validation_names_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GenerationParams(prompt="x", **kwargs).validate()


def test_defaults_and_server_differences():
    p = GenerationParams()
    assert (p.steps, p.sampler_name, p.cfg_scale, p.inpainting_fill, p.inpaint_full_res_padding) == \
        (20, "Euler a", 7.0, 1, 32)
    assert server_defaults() == {"steps": 50, "width": 512, "height": 512,
                                 "inpainting_fill": 0, "inpaint_full_res": True, "inpaint_full_res_padding": 0}
    assert p.sized(64).width == 64 and GenerationParams(width=128).sized(64).width == 128


def test_docs_table_is_generated_from_the_fields():
    with open(DOCS, encoding="utf-8") as f:
        assert defaults_table() in f.read()


def test_wrappers_refuse_fields_of_the_other_mode():
    with pytest.raises(TypeError, match="txt2img.*'resize_mode'"):
        Pipeline.txt2img(object(), "x", resize_mode=1)
    with pytest.raises(TypeError, match="img2img.*'hr_scale' \\(a txt2img parameter"):
        Pipeline.img2img(object(), Image.new("RGB", (8, 8)), "x", hr_scale=2.0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'stepz'"):
        GenerationParams(prompt="x", stepz=3)


def test_cli_options_come_from_the_fields(tmp_path):
    init, mask = tmp_path / "i.png", tmp_path / "m.png"
    Image.new("RGB", (64, 64)).save(init)
    Image.new("L", (64, 64)).save(mask)
    args = build_parser().parse_args(["img2img", str(init), "a cat", "--steps", "7", "--sampler", "DDIM", "--eta", "0.3",
                                      "--mask", str(mask), "--only-masked", "--ensd", "31337", "-n", "dog"])
    p = params_from_args(args)
    assert (p.prompt, p.negative_prompt, p.steps, p.sampler_name, p.eta, p.inpaint_full_res,
            p.eta_noise_seed_delta) == ("a cat", "dog", 7, "DDIM", 0.3, True, 31337)
    assert p.init_images[0].size == (64, 64) and p.mask.mode == "L"
    defaults = params_from_args(build_parser().parse_args(["txt2img", "a cat"]))
    plain = GenerationParams(prompt="a cat")
    assert all(getattr(defaults, f.name) == getattr(plain, f.name) for f in dataclasses.fields(plain))
    t2i_flags = {a.dest for a in build_parser()._subparsers._group_actions[0].choices["txt2img"]._actions}
    assert "resize_mode" not in t2i_flags and "steps" in t2i_flags and "hr_scale" in t2i_flags
    i2i_flags = {a.dest for a in build_parser()._subparsers._group_actions[0].choices["img2img"]._actions}
    assert "hr_scale" not in i2i_flags and "denoising_strength" in i2i_flags
    hires = params_from_args(build_parser().parse_args(["txt2img", "a cat", "--hr-upscaler", "Lanczos"]))
    assert hires.enable_hr and hires.hr_upscaler == "Lanczos"  # any --hr-* option turns it on


def test_server_request_models_are_built_from_the_fields():
    from sdrt.server.limits import Limits
    from sdrt.server.schemas import request_models

    txt2img, img2img = request_models(Limits(max_steps=40))
    api_fields = {f.name for f in dataclasses.fields(GenerationParams) if f.metadata["api"] is not None}
    only = {mode: {f.name for f in dataclasses.fields(GenerationParams) if f.metadata["only"] == mode}
            for mode in ("txt2img", "img2img")}
    assert api_fields <= set(img2img.model_fields)  # A1111's img2img request holds txt2img's fields too
    assert api_fields - only["img2img"] <= set(txt2img.model_fields)
    assert not only["img2img"] & set(txt2img.model_fields)
    assert txt2img.model_fields["steps"].default == 40  # A1111's 50, capped by the limit
    request = img2img(init_images=["x"])
    for name, value in server_defaults().items():
        if name != "steps":
            assert getattr(request, name) == value, name
