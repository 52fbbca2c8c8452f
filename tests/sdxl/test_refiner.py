"""The refiner (A1111's semantics: the running sampler continues on the refiner's UNet and
conditioning from the switch point) against diffusers' base `denoising_end` + refiner
`denoising_start` hand-off, and its invariants."""
import numpy as np
import pytest
from diffusers import EulerDiscreteScheduler

import sdrt
from sdrt.pipelines.rng import ImageRNG

PROMPT, NEGATIVE = "a red cat in a hat", "fog"  # a non-empty negative: diffusers' refiner does not zero an empty one


@pytest.fixture(scope="module")
def base(tiny_sdxl):
    return sdrt.load(tiny_sdxl[0])


def run(pipe, **kw):
    params = {**dict(seed=5, steps=10, cfg_scale=6.0, sampler_name="Euler", scheduler="Karras"), **kw}
    return pipe.txt2img(PROMPT, NEGATIVE, **params)


def test_euler_hand_off_matches_diffusers_denoising_end_and_start(base, tiny_sdxl, tiny_refiner):
    folder, refiner_folder = tiny_sdxl[0], tiny_refiner[0]
    got = run(base, refiner_checkpoint=refiner_folder, refiner_switch_at=0.5)
    ref_base = tiny_sdxl[1]
    # sdrt decodes with the base model's VAE (SDXL's base and refiner ship the same one)
    ref_refiner = type(tiny_refiner[1])(**{**tiny_refiner[1].components, "vae": ref_base.vae}, requires_aesthetics_score=True)
    ref_refiner.set_progress_bar_config(disable=True)
    for p in (ref_base, ref_refiner):
        p.scheduler = EulerDiscreteScheduler.from_config(p.scheduler.config, use_karras_sigmas=True,
                                                         timestep_spacing="linspace")
    noise = ImageRNG((4, 8, 8), [5]).first()
    common = dict(prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=10, guidance_scale=6.0)
    latents = ref_base(**common, latents=noise.clone(), height=64, width=64, denoising_end=0.5,
                       output_type="latent").images
    want = ref_refiner(**common, image=latents, denoising_start=0.5, output_type="np").images[0] * 255.0
    image = np.asarray(got.images[0], dtype=np.float64)
    assert np.abs(image - np.floor(want)).max() <= 1
    assert f"Refiner: {base.companion(refiner_folder).info.name}, Refiner switch at: 0.5" in got.infotexts[0]
    plain = np.asarray(run(base).images[0], dtype=np.float64)
    assert np.abs(plain - image).max() > 1  # the refiner changed the picture beyond the parity tolerance


@pytest.fixture(scope="module")
def twin(tiny_sdxl, tmp_path_factory):
    """The same model under another path: an identical second model to switch to."""
    import shutil

    folder = tmp_path_factory.mktemp("twin") / "tiny-sdxl-twin"
    shutil.copytree(tiny_sdxl[0], folder)
    return str(folder)


@pytest.mark.parametrize("sampler", ["DPM++ 2M", "Euler a"])
def test_switching_to_an_identical_model_or_at_1_changes_nothing(base, twin, sampler):
    alone = run(base, sampler_name=sampler)
    same = run(base, sampler_name=sampler, refiner_checkpoint=twin, refiner_switch_at=0.5)
    never = run(base, sampler_name=sampler, refiner_checkpoint=twin, refiner_switch_at=1.0)
    assert np.array_equal(np.asarray(alone.images[0]), np.asarray(same.images[0]))
    assert np.array_equal(np.asarray(alone.images[0]), np.asarray(never.images[0]))
    assert "Refiner: tiny-sdxl-twin, Refiner switch at: 0.5" in same.infotexts[0]
    assert "Refiner" not in never.infotexts[0]


def test_the_model_itself_as_refiner_is_no_switch(base, tiny_sdxl):
    """A1111: a refiner that is the loaded model switches nothing and writes nothing."""
    result = run(base, refiner_checkpoint=tiny_sdxl[0], refiner_switch_at=0.5)
    assert "Refiner" not in result.infotexts[0]
    assert base.companion(tiny_sdxl[0]) is base


def test_with_the_hires_fix_the_refiner_runs_in_the_hires_pass(base, tiny_refiner):
    calls = {"base": 0, "refiner": 0}
    refiner = base.companion(tiny_refiner[0])
    hooks = [base.unet.register_forward_hook(lambda *a: calls.__setitem__("base", calls["base"] + 1)),
             refiner.unet.register_forward_hook(lambda *a: calls.__setitem__("refiner", calls["refiner"] + 1))]
    try:
        result = run(base, steps=4, enable_hr=True, hr_scale=2.0, hr_second_pass_steps=4, denoising_strength=0.6,
                     refiner_checkpoint=tiny_refiner[0], refiner_switch_at=0.5)
    finally:
        for h in hooks:
            h.remove()
    assert result.images[0].size == (128, 128)
    assert calls["base"] > 4 and calls["refiner"] > 0  # the first pass (4 calls) all on the base
    assert "Refiner switch at: 0.5" in result.infotexts[0]


def test_refiner_with_another_latent_space_is_refused(base):
    with pytest.raises(sdrt.pipelines.params.ParamError, match="refiner_checkpoint='toy': its latent space"):
        run(base, refiner_checkpoint="toy")
