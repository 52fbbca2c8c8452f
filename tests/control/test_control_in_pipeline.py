"""ControlNet units inside the pipeline: the extension's guidance window step by step (A1111's
sampling-step counter), cond-only control, units that change nothing, img2img / inpainting
inputs, and clear errors."""
import numpy as np
import pytest
from PIL import Image

from sdrt.pipelines.params import ParamError
from sdrt.toy import data

HINT = data.render(data.scene_from(data.ShapeSpec("circle", "red", "large", "top left")))


def _unit(folder, **fields):
    return {"module": "canny", "model": folder, "image": HINT, **fields}


def _steps_with_control(pipe, monkeypatch, unit, **params):
    """The sampler steps (0-based) in which the ControlNet ran."""
    current, seen = [0], []
    original = pipe.backend.controlnet_forward

    def recording(*args, **kwargs):
        seen.append(current[0])
        return original(*args, **kwargs)
    monkeypatch.setattr(pipe.backend, "controlnet_forward", recording)
    pipe.txt2img("a red circle", seed=3, callback=lambda d: current.__setitem__(0, d["i"] + 1), controlnet=[unit],
                 **params)
    return seen


@pytest.mark.parametrize("start,end,expected", [
    # active while start <= s / steps <= end, s = A1111's sampling_step: 0 in step 0, then the
    # index of the last finished step (so step i sees i - 1)
    (0.2, 0.5, {3, 4, 5, 6}),
    (0.0, 0.2, {0, 1, 2, 3}),
    (0.55, 1.0, set(range(7, 10))),
    (0.0, 1.0, set(range(10))),
])
def test_guidance_window_step_by_step(toy_pipe, random_controlnets, monkeypatch, start, end, expected):
    seen = _steps_with_control(toy_pipe, monkeypatch, _unit(random_controlnets[0], guidance_start=start,
                                                            guidance_end=end), steps=10, sampler_name="Euler")
    assert set(seen) == expected
    assert len(seen) == 2 * len(expected) or len(seen) == len(expected)  # cond and uncond in one or two calls


def test_two_stage_sampler_calls_share_the_step(toy_pipe, random_controlnets, monkeypatch):
    """Heun evaluates twice per step (once in the last): both calls see the same sampling step."""
    seen = _steps_with_control(toy_pipe, monkeypatch, _unit(random_controlnets[0], guidance_start=0.3,
                                                            guidance_end=0.6), steps=10, sampler_name="Heun")
    assert sorted(set(seen)) == [4, 5, 6, 7] and all(seen.count(s) == 2 for s in set(seen))


def test_controlnet_is_more_important_controls_the_conditional_half_only(toy_pipe, random_controlnets, monkeypatch):
    captured = []
    original = toy_pipe.denoiser.unet  # the backend's unet_forward, as the denoiser calls it

    def capture(x, t, context, extras=None):
        captured.append(extras)
        return original(x, t, context, extras)
    monkeypatch.setattr(toy_pipe.denoiser, "unet", capture)
    for mode in ("Balanced", "ControlNet is more important"):
        captured.clear()
        toy_pipe.txt2img("a red circle", seed=3, steps=3, controlnet=[_unit(random_controlnets[0], control_mode=mode)])
        mid = captured[0]["mid_block_additional_residual"]  # rows: cond, then uncond
        assert mid.shape[0] == 2 and mid[0].abs().max() > 0
        assert (mid[1].abs().max() == 0) == (mode != "Balanced")


def test_units_that_change_nothing(toy_pipe, random_controlnets):
    plain = np.asarray(toy_pipe.txt2img("a red circle", seed=5, steps=6).images[0])
    for unit in (_unit(random_controlnets[0], weight=0), _unit(random_controlnets[0], enabled=False),
                 _unit("None")):
        got = np.asarray(toy_pipe.txt2img("a red circle", seed=5, steps=6, controlnet=[unit]).images[0])
        assert (got == plain).all(), unit
    controlled = np.asarray(toy_pipe.txt2img("a red circle", seed=5, steps=6,
                                             controlnet=[_unit(random_controlnets[0])]).images[0])
    assert np.abs(controlled.astype(int) - plain).max() > 8


def test_img2img_and_inpainting_take_the_init_image(toy_pipe, random_controlnets):
    init = Image.fromarray(HINT)
    mask = Image.fromarray(data.mask(data.scene_from(data.ShapeSpec("circle", "red", "large", "top left"))))
    unit = {"module": "canny", "model": random_controlnets[0]}  # no image: the init image is used
    result = toy_pipe.img2img(init, "a red circle", seed=2, steps=6, controlnet=[unit])
    assert "ControlNet 0" in result.infotexts[0] and "Module: canny" in result.infotexts[0]
    inpainted = toy_pipe.img2img(init, "a blue circle", seed=2, steps=6, mask=mask,
                                 controlnet=[{"module": "inpaint_only", "model": random_controlnets[1]}])
    assert inpainted.images[0].size == (64, 64)


def test_errors_name_the_field(toy_pipe, random_controlnets):
    with pytest.raises(ParamError, match=r"controlnet\[0\]\.image") as e:
        toy_pipe.txt2img("a red circle", steps=2, controlnet=[{"module": "canny", "model": random_controlnets[0]}])
    assert e.value.field == "controlnet[0].image"
    with pytest.raises(ParamError, match=r"controlnet\[1\]\.model='no_such_controlnet'"):
        toy_pipe.txt2img("a red circle", steps=2, controlnet=[_unit(random_controlnets[0]),
                                                               _unit("no_such_controlnet")])


def test_hires_pass_reuses_the_first_pass_map(toy_pipe, random_controlnets, monkeypatch):
    from sdrt.control.preprocessors import model_free

    calls = []
    original = model_free.canny_edges
    monkeypatch.setattr(model_free, "canny_edges", lambda image, *a: calls.append(image.shape[:2]) or original(image, *a))
    result = toy_pipe.txt2img("a red circle", seed=1, steps=3, enable_hr=True, hr_scale=2, denoising_strength=0.5,
                              controlnet=[_unit(random_controlnets[0], pixel_perfect=True)])
    assert result.images[0].size == (128, 128) and calls == [(64, 64)]  # once, at the first pass's pixel-perfect size


def test_a_bad_model_file_is_a_param_error(toy_pipe, tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ParamError) as e:
        toy_pipe.txt2img("a red circle", steps=2, controlnet=[_unit(str(bad))])
    assert e.value.field == "controlnet[0].model"
