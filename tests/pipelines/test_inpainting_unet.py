"""9-channel inpainting UNets (SD 1.5-inpainting's layout): the UNet's input is the latents, then the
mask, then the latents of the image with the masked part grey (LDM's c_concat; A1111's
inpainting_image_conditioning; diffusers' StableDiffusionInpaintPipeline).

The model: the shipped toy weights with the UNet's first convolution widened to 9 input channels,
the 5 new ones random (so a wrong channel order or mask value changes the output), as inpainting
models are made from base models.
"""
import shutil

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
from diffusers.image_processor import VaeImageProcessor
from PIL import Image

import sdrt
from sdrt.pipelines.rng import ImageRNG
from sdrt.prompt import get_tokenizer
from sdrt.toy import data


def widen_unet(folder, in_channels, seed=0):
    base = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=torch.float32)
    wide = UNet2DConditionModel.from_config({**base.config, "in_channels": in_channels})
    state = base.state_dict()
    g = torch.Generator().manual_seed(seed)
    w = state["conv_in.weight"]
    extra = torch.randn(w.shape[0], in_channels - w.shape[1], *w.shape[2:], generator=g) * w.std()
    state["conv_in.weight"] = torch.cat([w, extra], dim=1)
    wide.load_state_dict(state)
    wide.save_pretrained(folder / "unet", safe_serialization=True)


@pytest.fixture(scope="module")
def inpaint_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "toy-inpainting"
    shutil.copytree(sdrt.loading.toy_model_path(), folder)
    widen_unet(folder, 9)
    return folder


@pytest.fixture(scope="module")
def pipe(inpaint_folder):
    return sdrt.load(str(inpaint_folder))


def scene_image(spec):
    return Image.fromarray(data.render(data.scene_from(spec, "white")))


def test_inpainting_model_is_detected(pipe):
    assert pipe.info.unet_in_channels == 9 and pipe.info.latent_channels == 4
    assert pipe.info.image_cond_channels == 5


def test_image_conditioning_is_mask_then_masked_image_latents(pipe):
    spec = data.ShapeSpec("circle", "red", "large", "top left")
    image = scene_image(spec)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(200, (8, 8, 40, 30))
    mask.paste(100, (40, 30, 56, 56))  # below half: not masked
    cond = pipe.image_conditioning(2, 64, 64, [image, image], mask)
    assert cond.shape == (2, 5, 8, 8)
    # the mask as diffusers prepares it for an inpainting UNet: binarized, nearest to the latent size
    proc = VaeImageProcessor(vae_scale_factor=8, do_normalize=False, do_binarize=True, do_convert_grayscale=True)
    want_mask = torch.nn.functional.interpolate(proc.preprocess(mask, height=64, width=64), size=(8, 8))
    torch.testing.assert_close(cond[:, :1], want_mask.expand(2, -1, -1, -1))
    pixels = VaeImageProcessor(vae_scale_factor=8).preprocess(image, height=64, width=64)
    masked = pixels * (proc.preprocess(mask, height=64, width=64) < 0.5)
    want_latents = pipe.vae.encode(masked).latent_dist.mean * pipe.info.scaling_factor
    torch.testing.assert_close(cond[:, 1:], want_latents.expand(2, -1, -1, -1), atol=1e-5, rtol=1e-5)
    # txt2img: everything masked over a grey image
    full = pipe.image_conditioning(1, 64, 64)
    assert torch.equal(full[:, :1], torch.ones(1, 1, 8, 8))
    grey = pipe.vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean * pipe.info.scaling_factor
    torch.testing.assert_close(full[:, 1:], grey)


def test_full_mask_inpainting_matches_diffusers_inpaint_pipeline(pipe, inpaint_folder):
    """A mask covering everything with 'latent nothing' fill starts from pure noise (as diffusers at
    strength 1); diffusers is given the masked-image latents sdrt encodes (diffusers samples the VAE
    posterior where sdrt takes its mean) and the same initial noise."""
    ref = StableDiffusionInpaintPipeline.from_pretrained(
        str(inpaint_folder), tokenizer=get_tokenizer(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False, torch_dtype=torch.float32, local_files_only=True)
    ref.scheduler = EulerDiscreteScheduler.from_config(ref.scheduler.config, use_karras_sigmas=True,
                                                       timestep_spacing="linspace")
    ref.set_progress_bar_config(disable=True)
    image = scene_image(data.ShapeSpec("square", "blue", "large", "bottom right"))
    mask = Image.new("L", (64, 64), 255)
    prompt, seed, steps, cfg = "a large yellow triangle in the top right", 321, 10, 5.0
    got = np.asarray(pipe.img2img(image, prompt, mask=mask, mask_blur=0, inpainting_fill=3, denoising_strength=1.0,
                                  seed=seed, steps=steps, cfg_scale=cfg, sampler_name="Euler",
                                  scheduler="Karras").images[0], dtype=np.float64)
    masked_latents = pipe.image_conditioning(1, 64, 64, [image], mask)[:, 1:]
    noise = ImageRNG((4, 8, 8), [seed]).first()
    want = ref(prompt, image=image, mask_image=mask, masked_image_latents=masked_latents, latents=noise,
               num_inference_steps=steps, guidance_scale=cfg, height=64, width=64, strength=1.0,
               output_type="np").images[0] * 255.0
    assert np.abs(got - np.floor(want)).max() <= 1
    psnr = 10 * np.log10(255.0**2 / np.mean((got - want) ** 2))
    assert psnr >= 45, f"PSNR {psnr:.1f} dB"


def test_inpainting_model_keeps_pixels_outside_the_mask_and_batches_match_singles(pipe):
    image = scene_image(data.ShapeSpec("square", "blue", "large", "bottom right"))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 32))
    kwargs = dict(mask=mask, mask_blur=0, denoising_strength=0.9, steps=8, cfg_scale=5.0)
    out = pipe.img2img(image, "a red circle in the top left", seed=9, batch_size=2, **kwargs)
    for im in out.images:
        d = np.abs(np.asarray(im, dtype=int) - np.asarray(image, dtype=int))
        assert d[32:, :].max() < 2 and d[:, 32:].max() < 2
    single = pipe.img2img(image, "a red circle in the top left", seed=10, **kwargs)
    assert np.array_equal(np.asarray(out.images[1]), np.asarray(single.images[0]))


def test_txt2img_runs_an_inpainting_model(pipe):
    r = pipe.txt2img("a green square", seed=1, steps=4)
    assert r.images[0].size == (64, 64)


def test_unsupported_unet_input_channels_are_refused(tmp_path):
    folder = tmp_path / "pix2pix-like"
    shutil.copytree(sdrt.loading.toy_model_path(), folder)
    widen_unet(folder, 8)
    with pytest.raises(ValueError, match="8 input channels.*instruct-pix2pix"):
        sdrt.load(str(folder))
