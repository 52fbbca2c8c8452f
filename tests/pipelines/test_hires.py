"""Hires fix (A1111 txt2img enable_hr) on the toy model: sizes as A1111 computes them, the hires
pass's noise and steps as A1111 draws and runs them, its prompt schedule, infotext, the pixel
path through an upscaler and the VAE, a second model, interruption and bad input."""
import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

import sdrt
from sdrt.pipelines import GenerationParams, JobHooks
from sdrt.pipelines.hires import plan_hires, target_size
from sdrt.pipelines.params import ParamError
from sdrt.pipelines.rng import ImageRNG
from sdrt.postprocess.upscalers import LATENT_UPSCALE_MODES, Upscalers
from sdrt.prompt.scheduling import get_learned_conditioning_prompt_schedules

PROMPT = "a large red circle in the top left on a white background"


@pytest.fixture(scope="module")
def pipe():
    torch.set_num_threads(1)
    return sdrt.load("toy")


def _p(**kw):
    base = dict(prompt=PROMPT, width=64, height=64, enable_hr=True, denoising_strength=0.5)
    return GenerationParams(**{**base, **kw})


@pytest.mark.parametrize("w,h,kw,to,cut", [
    (64, 64, dict(hr_scale=2.0), (128, 128), (0, 0)),
    (64, 48, dict(hr_scale=1.5), (96, 72), (0, 0)),
    (64, 64, dict(hr_resize_x=100), (100, 100), (0, 0)),
    (64, 48, dict(hr_resize_y=96), (128, 96), (0, 0)),
    # another aspect: A1111 scales to cover and cuts latents
    (64, 64, dict(hr_resize_x=128, hr_resize_y=96), (128, 128), (0, 4)),
    (64, 48, dict(hr_resize_x=96, hr_resize_y=96), (128, 96), (4, 0)),
])
def test_target_size_as_a1111_calculates_it(w, h, kw, to, cut):
    size, truncate, entry = target_size(w, h, _p(width=w, height=h, **kw))
    assert size == to and truncate == cut
    assert list(entry) == (["Hires upscale"] if not ("hr_resize_x" in kw or "hr_resize_y" in kw) else ["Hires resize"])


def test_plan_second_pass_steps_prompts_and_legacy_first_phase():
    plan = plan_hires(_p(steps=20, hr_second_pass_steps=7, denoising_strength=0.3, hr_prompt="a blue circle",
                         hr_sampler_name="DDIM", firstphase_width=48, seed=5), Upscalers())
    assert (plan.first.width, plan.first.height) == (48, 64) and not plan.first.enable_hr
    assert plan.run_steps == 7 and plan.second.steps == int(7 / 0.3)  # A1111's fixed-steps img2img
    assert (plan.second.width, plan.second.height) == (96, 128)
    assert plan.second.prompt == "a blue circle" and plan.second.negative_prompt == ""
    assert plan.second.sampler_name == "DDIM" and plan.first.sampler_name == "Euler a"
    assert plan.first.seed == plan.second.seed == 5


def _capture(pipe, params):
    """Run and keep every model call's callback info (copies: the samplers update x in place)."""
    seen = []
    keep = lambda info: seen.append({k: v.clone() if torch.is_tensor(v) else v for k, v in info.items()})  # noqa: E731
    result = pipe.generate(params, JobHooks(callback=keep))
    return result, seen


def test_hires_noise_is_a1111s_for_the_same_seed_at_the_new_size(pipe):
    # Euler (no ancestral noise): the first pass ends at its last prediction, so the hires pass
    # starts at interpolate(first) + noise * sigma, noise = the seeds' generators at the new size
    params = _p(sampler_name="Euler", steps=6, hr_second_pass_steps=4, seed=11, subseed=77, subseed_strength=0.3,
                hr_upscaler="Latent (bicubic)")
    result, seen = _capture(pipe, params)
    first = [s for s in seen if s["hires_pass"] == 0]
    second = [s for s in seen if s["hires_pass"] == 1]
    assert len(first) == 6 and len(second) == 4  # exactly hr_second_pass_steps model calls
    low = first[-1]["denoised"]
    up = torch.nn.functional.interpolate(low, size=(16, 16), mode="bicubic")
    noise = ImageRNG((4, 16, 16), [11], subseeds=[77], subseed_strength=0.3).first()
    torch.testing.assert_close(second[0]["x"], up + noise * float(second[0]["sigma"]), atol=1e-5, rtol=1e-5)
    assert result.images[0].size == (128, 128) and result.seeds == [11]


def test_hires_pass_prompt_schedule_is_a1111s_hires_form(pipe):
    # A1111's hires form: a fraction f counts (f - 1) of the hires pass ("[red:blue:1.5]": half of
    # it), an integer n counts n - first-pass steps ("[red:blue:25]" after 20 steps: step 5), whatever
    # the length of the hires pass's schedule (int(10 / 0.75) = 13 here)
    for prompt in ("a [red:blue:1.5] circle", "a [red:blue:25] circle"):
        plan = plan_hires(_p(prompt=prompt, steps=20, hr_second_pass_steps=10, denoising_strength=0.75), pipe.upscalers)
        second = pipe.prepare(plan.second, JobHooks())
        conds = pipe.condition(second, hires_of=(plan.first.steps, plan.run_steps))
        want = get_learned_conditioning_prompt_schedules([prompt], 20, 10)[0]
        assert conds[0].conds[0].ends == [end for end, _ in want] and len(want) == 2


def test_infotext_has_a1111s_hires_entries_in_order(pipe):
    result = pipe.txt2img(PROMPT, seed=3, steps=4, enable_hr=True, hr_scale=1.5, hr_second_pass_steps=3,
                          hr_upscaler="Latent (nearest)", hr_sampler_name="DPM++ 2M", hr_scheduler="Karras",
                          hr_prompt="a large blue circle", denoising_strength=0.4)
    params = result.infotexts[0].split("\n")[-1]
    assert params.startswith("Steps: 4, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 3, "
                             "Size: 64x64, Model: toy, Denoising strength: 0.4, RNG: CPU, Hires sampler: DPM++ 2M, "
                             "Hires prompt: a large blue circle, Hires schedule type: Karras, Hires upscale: 1.5, "
                             "Hires steps: 3, Hires upscaler: Latent (nearest), Version: sdrt")
    assert result.images[0].size == (96, 96)
    # per image: "Hires prompt" only where that image's hires prompt differs from its prompt
    two = pipe.txt2img(PROMPT, seed=3, steps=2, batch_size=2, enable_hr=True, hr_second_pass_steps=1,
                       hr_prompt=["a large blue circle", PROMPT])
    assert "Hires prompt: a large blue circle" in two.infotexts[0] and "Hires prompt" not in two.infotexts[1]


def test_pixel_upscaler_path_decodes_upscales_and_encodes(pipe, monkeypatch):
    from sdrt.pipelines import hires

    starts = []
    original = hires.hires_start
    monkeypatch.setattr(hires, "hires_start", lambda *a: starts.append(original(*a)) or starts[-1])
    params = _p(sampler_name="Euler", steps=5, hr_second_pass_steps=3, seed=4, hr_upscaler="Lanczos")
    result, seen = _capture(pipe, params)
    low = [s for s in seen if s["hires_pass"] == 0][-1]["denoised"]
    want = pipe.encode([im.resize((128, 128), Image.Resampling.LANCZOS) for im in pipe.decode(low)])
    torch.testing.assert_close(starts[0].latents, want)
    assert starts[0].run_steps == 3 and result.images[0].size == (128, 128)


def test_second_model_runs_the_hires_pass(pipe):
    other = sdrt.load("toy")
    params = _p(sampler_name="Euler", steps=4, hr_second_pass_steps=2, seed=8, hr_checkpoint_name="toy copy")
    with pytest.raises(ParamError, match="hr_checkpoint_name='toy copy': .*no such file"):  # loaded by name: unknown
        pipe.generate(params)
    calls = []
    other.unet.register_forward_hook(lambda *a: calls.append(1))
    result = pipe.generate(params, JobHooks(hires_pipeline=other))
    same = pipe.generate(dataclasses.replace(params, hr_checkpoint_name=None))
    assert len(calls) == 2  # the hires pass ran on the second model (per-image batching: one call a step)
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(same.images[0]))  # same weights
    assert "Hires checkpoint: toy," in result.infotexts[0]  # A1111's short title: name [hash10] (the toy has no hash)


def test_skipped_first_pass_ends_with_its_upscale(pipe):
    skips = [True]
    result = pipe.generate(_p(steps=6, seed=1, hr_upscaler="Latent (nearest)"),
                           JobHooks(should_skip=lambda: bool(skips) and skips.pop()))
    assert not result.interrupted and result.images[0].size == (128, 128)


def test_interrupted_first_pass_returns_it_at_its_size(pipe):
    calls = []
    result = pipe.generate(_p(steps=6, seed=1, n_iter=2),
                           JobHooks(callback=lambda i: calls.append(i), should_stop=lambda: len(calls) >= 3))
    assert result.interrupted and len(result.images) == 1 and result.images[0].size == (64, 64)


@pytest.mark.parametrize("kw,field", [
    (dict(hr_upscaler="Nope"), "hr_upscaler"),
    (dict(denoising_strength=0.0), "denoising_strength"),
    (dict(hr_prompt=["a", "b"]), "hr_prompt"),
    (dict(hr_prompt="<lora:x:1> a red circle"), "hr_prompt"),
    (dict(denoising_strength=1e-6), "denoising_strength"),
    (dict(firstphase_width=60), "firstphase_width"),
])
def test_bad_hires_input_names_the_field(pipe, kw, field):
    with pytest.raises(ParamError) as e:
        pipe.generate(_p(steps=2, **kw))
    assert e.value.field == field


def test_hires_fields_are_txt2img_only(pipe):
    with pytest.raises(TypeError, match="enable_hr"):
        pipe.img2img(Image.new("RGB", (64, 64)), PROMPT, enable_hr=True)
    with pytest.raises(ParamError, match="enable_hr"):
        GenerationParams(prompt="x", init_images=[Image.new("RGB", (64, 64))], enable_hr=True).validate()
    assert set(LATENT_UPSCALE_MODES) == {"Latent", "Latent (antialiased)", "Latent (bicubic)",
                                         "Latent (bicubic antialiased)", "Latent (nearest)", "Latent (nearest-exact)"}


def test_hires_checkpoint_by_name_is_loaded_once_and_kept(tmp_path):
    import shutil

    import sdrt

    pipe = sdrt.load("toy")
    copy = str(tmp_path / "toy_copy")
    shutil.copytree(sdrt.loading.toy_model_path(), copy)
    params = dict(seed=3, steps=4, enable_hr=True, hr_scale=1.5, hr_second_pass_steps=2, denoising_strength=0.5,
                  hr_checkpoint_name=copy)
    first = pipe.txt2img("a red circle", **params)
    kept = pipe.companion(copy)
    second = pipe.txt2img("a red circle", **params)
    assert pipe.companion(copy) is kept and kept is not pipe
    assert pipe.companion("toy") is pipe  # its own model: no second copy
    assert "Hires checkpoint: toy_copy" in first.infotexts[0]
    assert np.array_equal(np.asarray(first.images[0]), np.asarray(second.images[0]))
