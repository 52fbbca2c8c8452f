"""ControlNet txt2img against diffusers' StableDiffusionControlNetPipeline on the same weights:
the toy model with random ControlNets (every weight random, zero convolutions included), one and
two at once (MultiControlNetModel), at several conditioning scales. Euler with Karras sigmas is
defined identically in both (see tests/pipelines/test_parity_diffusers.py), the guidance window
is the whole run, and the Balanced mode runs the ControlNets on both CFG halves as diffusers does.
Tolerance: 1 uint8 level, PSNR >= 45 dB."""
import numpy as np
import pytest
from diffusers import EulerDiscreteScheduler, MultiControlNetModel, StableDiffusionControlNetPipeline
from PIL import Image

import sdrt
from sdrt.pipelines.rng import ImageRNG
from sdrt.prompt import get_tokenizer
from sdrt.toy import data


@pytest.fixture(scope="module")
def setup(toy_pipe, random_controlnets):
    hints = [data.render(data.scene_from(data.ShapeSpec("square", "blue", "large", "bottom right"))),
             data.segmentation_map(data.scene_from(data.ShapeSpec("circle", "red", "small", "top left")))]
    return toy_pipe, random_controlnets, hints


def _reference(pipe, controlnet):
    ref = StableDiffusionControlNetPipeline(
        vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=get_tokenizer(), unet=pipe.unet,
        controlnet=controlnet, scheduler=EulerDiscreteScheduler.from_pretrained(
            sdrt.loading.toy_model_path(), subfolder="scheduler", use_karras_sigmas=True, timestep_spacing="linspace"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    ref.set_progress_bar_config(disable=True)
    return ref


@pytest.mark.parametrize("count,scales", [(1, [1.0]), (1, [0.4]), (2, [0.7, 1.3])])
def test_matches_diffusers_controlnet_pipeline(setup, count, scales):
    pipe, folders, hints = setup
    prompt, negative, seed, steps, cfg = "a green triangle", "purple", 7, 10, 6.0
    units = [{"module": "none", "model": folders[i], "image": hints[i], "weight": scales[i],
              "resize_mode": "Just Resize"} for i in range(count)]
    got = np.asarray(pipe.txt2img(prompt, negative, seed=seed, steps=steps, cfg_scale=cfg, sampler_name="Euler",
                                  scheduler="Karras", controlnet=units).images[0], dtype=np.float64)
    models = [pipe.control.load(f)[0] for f in folders[:count]]
    ref = _reference(pipe, models[0] if count == 1 else MultiControlNetModel(models))
    images = [Image.fromarray(h) for h in hints[:count]]
    want = ref(prompt, negative_prompt=negative, image=images[0] if count == 1 else images,
               controlnet_conditioning_scale=scales[0] if count == 1 else scales, num_inference_steps=steps,
               guidance_scale=cfg, latents=ImageRNG((4, 8, 8), [seed]).first(), height=64, width=64,
               output_type="np").images[0] * 255.0
    assert np.abs(got - np.floor(want)).max() <= 1
    psnr = 10 * np.log10(255.0**2 / max(np.mean((got - want) ** 2), 1e-12))
    assert psnr >= 45, f"PSNR {psnr:.1f} dB"
    plain = np.asarray(pipe.txt2img(prompt, negative, seed=seed, steps=steps, cfg_scale=cfg, sampler_name="Euler",
                                    scheduler="Karras").images[0], dtype=np.float64)
    assert np.abs(plain - got).max() > 8, "the random ControlNet must change the picture for this test to mean anything"
