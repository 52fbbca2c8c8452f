"""sdrt's SDXL path against diffusers' StableDiffusionXLPipeline on the same tiny random SDXL:
conditioning tensors (2048-wide context's analogue, pooled, time ids, the zeroed empty negative)
to 1e-5, and whole txt2img runs from the same initial noise to 1 uint8 level."""
import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler

import sdrt
from sdrt.pipelines.rng import ImageRNG
from sdrt.pipelines.sdxl import SDXLAddedInputs
from sdrt.sampling.unet_inputs import COND, UNCOND, UNetCall, UNetRow


@pytest.fixture(scope="module")
def pipes(tiny_sdxl):
    folder, ref = tiny_sdxl
    return sdrt.load(folder), ref


def encode(pipe, prompt, negative):
    job = pipe.prepare(sdrt.pipelines.GenerationParams(prompt=prompt, negative_prompt=negative).sized(64),
                       sdrt.pipelines.hooks.JobHooks())
    return job, pipe.condition(job)


@pytest.mark.parametrize("prompt,negative", [("a red cat in a hat", ""), ("a blue dog, photo", "blurry, ugly")])
def test_conditioning_matches_diffusers_encode_prompt(pipes, prompt, negative):
    ours, ref = pipes
    job, conds = encode(ours, prompt, negative)
    want = ref.encode_prompt(prompt, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True,
                             negative_prompt=negative or None)
    context, neg_context, pooled, neg_pooled = (t[0] for t in want)
    cond, uncond = conds[0].conds[0], conds[0].uncond
    assert cond.at(0).shape == (77, 64)  # CLIP-L 32 + bigG 32 wide in this tiny model (2048 at full size)
    torch.testing.assert_close(cond.at(0), context, rtol=0, atol=1e-5)
    torch.testing.assert_close(cond.pooled_at(0), pooled, rtol=0, atol=1e-5)
    torch.testing.assert_close(uncond.at(0), neg_context, rtol=0, atol=1e-5)
    torch.testing.assert_close(uncond.pooled_at(0), neg_pooled, rtol=0, atol=1e-5)
    if not negative:  # A1111 and diffusers: an empty negative is zeros, not the encoded ""
        assert torch.count_nonzero(uncond.at(0)) == 0 and torch.count_nonzero(uncond.pooled_at(0)) == 0
    # time ids: original (h, w), crop (top, left), target (h, w)
    extra = ours.model_inputs(job, conds)[0]
    call = UNetCall(torch.zeros(2, 4, 8, 8), torch.ones(2), (UNetRow(0, COND), UNetRow(0, UNCOND)), 0)
    ids = extra(call)["added_cond_kwargs"]["time_ids"]
    want_ids = ref._get_add_time_ids((64, 64), (0, 0), (64, 64), torch.float32, text_encoder_projection_dim=24)
    torch.testing.assert_close(ids, want_ids.expand(2, -1))


def test_time_ids_follow_the_size_height_first():
    ids = SDXLAddedInputs.for_job([], 6, width=1216, height=832).cond_ids
    assert ids.tolist() == [832, 1216, 0, 0, 832, 1216]
    refiner = SDXLAddedInputs.for_job([], 5, width=1024, height=1024)
    assert refiner.cond_ids.tolist() == [1024, 1024, 0, 0, 6.0] and refiner.uncond_ids.tolist()[-1] == 2.5


SCHEDULERS = {
    "Euler": lambda config: EulerDiscreteScheduler.from_config(config, use_karras_sigmas=True,
                                                               timestep_spacing="linspace"),
    "DPM++ 2M": lambda config: DPMSolverMultistepScheduler.from_config(
        config, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True, final_sigmas_type="zero",
        timestep_spacing="linspace"),
}


@pytest.mark.parametrize("sampler", list(SCHEDULERS))
@pytest.mark.parametrize("prompt,negative,cfg", [("a red cat in a hat", "", 7.0), ("a (blue:1.1) dog", "fog", 4.0)])
def test_txt2img_matches_the_diffusers_sdxl_pipeline(pipes, sampler, prompt, negative, cfg):
    ours, ref = pipes
    seed, steps = 11, 10
    got = ours.txt2img(prompt, negative, seed=seed, steps=steps, cfg_scale=cfg, sampler_name=sampler,
                       scheduler="Karras").images[0]
    ref.scheduler = SCHEDULERS[sampler](ref.scheduler.config)
    noise = ImageRNG((4, 8, 8), [seed]).first()
    weighted = "(blue:1.1)" in prompt
    if weighted:  # diffusers has no prompt weights: give it sdrt's conditioning
        job, conds = encode(ours, prompt, negative)
        kwargs = dict(prompt_embeds=conds[0].conds[0].at(0)[None], pooled_prompt_embeds=conds[0].conds[0].pooled_at(0)[None],
                      negative_prompt_embeds=conds[0].uncond.at(0)[None],
                      negative_pooled_prompt_embeds=conds[0].uncond.pooled_at(0)[None])
    else:
        kwargs = dict(prompt=prompt, negative_prompt=negative or None)
    want = ref(num_inference_steps=steps, guidance_scale=cfg, latents=noise.clone(), height=64, width=64,
               output_type="np", **kwargs).images[0] * 255.0
    got = np.asarray(got, dtype=np.float64)
    assert np.abs(got - np.floor(want)).max() <= 1


def test_turbo_settings_need_no_special_case(pipes):
    """SDXL Turbo / Lightning: few steps, CFG 1 (the uncond pass is skipped exactly), SGM Uniform."""
    ours, ref = pipes
    rows = []
    real = ours.denoiser.unet
    ours.denoiser.unet = lambda x, *a, **k: rows.append(x.shape[0]) or real(x, *a, **k)
    try:
        result = ours.txt2img("a red cat in a hat", seed=3, steps=4, cfg_scale=1.0, sampler_name="Euler a",
                              scheduler="SGM Uniform")
    finally:
        ours.denoiser.unet = real
    assert rows == [1, 1, 1, 1]  # one row per step: the cond alone
    assert "Schedule type: SGM Uniform" in result.infotexts[0] and "CFG scale: 1" in result.infotexts[0]
    assert np.asarray(result.images[0]).std() > 1


def _diffusers_cond(ref, text):
    context, _, pooled, _ = ref.encode_prompt(text, device="cpu", num_images_per_prompt=1,
                                              do_classifier_free_guidance=True, negative_prompt="x")
    return context[0], pooled[0]


def test_long_prompts_chunk_and_pool_from_the_first_chunk(pipes):
    """Past 75 tokens A1111 adds 77-token chunks; the pooled vector is the first chunk's, which is
    what diffusers computes for the prompt truncated to one chunk (no commas: no backtracking)."""
    ours, ref = pipes
    words = " ".join(["red", "cat", "hat", "blue", "dog"] * 20)  # 100 tokens
    cond = encode(ours, words, "")[1][0].conds[0]
    context, pooled = _diffusers_cond(ref, words)  # diffusers truncates to the first 75 tokens
    assert cond.at(0).shape == (154, 64)
    torch.testing.assert_close(cond.at(0)[:77], context, rtol=0, atol=1e-5)
    torch.testing.assert_close(cond.pooled_at(0), pooled, rtol=0, atol=1e-5)


def test_prompt_editing_switches_context_and_pooled(pipes):
    ours, ref = pipes
    cond = encode(ours, "a [red:blue:3] cat", "")[1][0].conds[0]
    for step, text in ((0, "a red cat"), (3, "a red cat"), (4, "a blue cat")):
        context, pooled = _diffusers_cond(ref, text)
        torch.testing.assert_close(cond.at(step), context, rtol=0, atol=1e-5)
        torch.testing.assert_close(cond.pooled_at(step), pooled, rtol=0, atol=1e-5)


def test_and_sub_prompts_each_bring_their_pooled_vector(pipes):
    ours, ref = pipes
    job, conds = encode(ours, "a red cat AND a blue dog :0.5", "")
    parts = conds[0].conds
    assert conds[0].weights == [1.0, 0.5]
    for part, text in zip(parts, ("a red cat", "a blue dog")):
        torch.testing.assert_close(part.pooled_at(0), _diffusers_cond(ref, text)[1], rtol=0, atol=1e-5)
    call = UNetCall(torch.zeros(3, 4, 8, 8), torch.ones(3), (UNetRow(0, COND, 0), UNetRow(0, COND, 1), UNetRow(0, UNCOND)), 0)
    embeds = ours.model_inputs(job, conds)[0](call)["added_cond_kwargs"]["text_embeds"]
    torch.testing.assert_close(embeds, torch.stack([parts[0].pooled_at(0), parts[1].pooled_at(0),
                                                    conds[0].uncond.pooled_at(0)]))
    image = ours.txt2img("a red cat AND a blue dog :0.5", seed=3, steps=4).images[0]
    assert np.asarray(image).std() > 1


def test_the_empty_negative_is_zeroed_per_image(pipes):
    ours, _ = pipes
    job = ours.prepare(sdrt.pipelines.GenerationParams(prompt="a cat", negative_prompt=["", "fog"], batch_size=2)
                       .sized(64), sdrt.pipelines.hooks.JobHooks())
    conds = ours.condition(job)
    assert torch.count_nonzero(conds[0].uncond.at(0)) == 0 and torch.count_nonzero(conds[0].uncond.pooled_at(0)) == 0
    assert torch.count_nonzero(conds[1].uncond.at(0)) > 0
