"""An SDXL ControlNet (pooled text and size ids reach it through the UNet's added inputs) against
diffusers' StableDiffusionXLControlNetPipeline on the same tiny random SDXL: 1 uint8 level."""
import numpy as np
import pytest
import torch
from diffusers import ControlNetModel, EulerDiscreteScheduler, StableDiffusionXLControlNetPipeline
from PIL import Image

import sdrt
from sdrt.pipelines.rng import ImageRNG


def save_random_controlnet(unet, folder, seed: int) -> None:
    """A ControlNet of `unet` whose zero convolutions are not zero (it changes the picture)."""
    controlnet = ControlNetModel.from_unet(unet)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in controlnet.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    controlnet.save_pretrained(folder, safe_serialization=True)


def test_sdxl_controlnet_matches_diffusers(tiny_sdxl, tmp_path):
    folder, ref = tiny_sdxl
    save_random_controlnet(ref.unet, tmp_path / "cn", seed=4)
    hint = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    ours = sdrt.load(folder)
    unit = {"module": "none", "model": str(tmp_path / "cn"), "image": hint, "weight": 0.8,
            "resize_mode": "Just Resize"}
    prompt, negative, seed, steps, cfg = "a red cat in a hat", "fog", 11, 8, 5.0
    got = np.asarray(ours.txt2img(prompt, negative, seed=seed, steps=steps, cfg_scale=cfg, sampler_name="Euler",
                                  scheduler="Karras", controlnet=[unit]).images[0], dtype=np.float64)
    plain = np.asarray(ours.txt2img(prompt, negative, seed=seed, steps=steps, cfg_scale=cfg, sampler_name="Euler",
                                    scheduler="Karras").images[0], dtype=np.float64)
    pipe = StableDiffusionXLControlNetPipeline(**ref.components, controlnet=ours.control.load(unit["model"])[0])
    pipe.scheduler = EulerDiscreteScheduler.from_config(ref.scheduler.config, use_karras_sigmas=True,
                                                        timestep_spacing="linspace")
    pipe.set_progress_bar_config(disable=True)
    want = pipe(prompt, negative_prompt=negative, image=Image.fromarray(hint), controlnet_conditioning_scale=0.8,
                num_inference_steps=steps, guidance_scale=cfg, latents=ImageRNG((4, 8, 8), [seed]).first(),
                height=64, width=64, output_type="np").images[0] * 255.0
    assert np.abs(got - np.floor(want)).max() <= 1
    assert np.abs(got - plain).max() > 8


def test_sdxl_controlnet_single_file_in_diffusers_layout(tiny_sdxl, tmp_path):
    from safetensors.torch import save_file

    from sdrt.control import load_controlnet

    _, ref = tiny_sdxl
    controlnet = ControlNetModel.from_unet(ref.unet)
    path = tmp_path / "controlnet-xl.safetensors"
    save_file({k: v.contiguous() for k, v in controlnet.state_dict().items()}, str(path))
    loaded = load_controlnet(str(path))
    for key in ("addition_embed_type", "projection_class_embeddings_input_dim", "transformer_layers_per_block",
                "block_out_channels", "down_block_types", "cross_attention_dim"):
        assert list(np.atleast_1d(loaded.config[key])) == list(np.atleast_1d(controlnet.config[key])), key
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in controlnet.state_dict().items())


def test_sdxl_controlnet_on_onnxruntime_matches_torch(tiny_sdxl, tmp_path):
    """An SDXL model exported with its ControlNet (the ControlNet graph takes the added inputs too)
    runs the unit on ONNX Runtime as the torch backend does: 1 uint8 level."""
    pytest.importorskip("onnxruntime")
    from sdrt.export import to_onnx

    folder, ref = tiny_sdxl
    save_random_controlnet(ref.unet, tmp_path / "cn-xl", seed=5)
    manifest = to_onnx(sdrt.load(folder), str(tmp_path / "onnx"), controlnets=[str(tmp_path / "cn-xl")])
    assert "text_embeds" in manifest["controlnets"]["cn-xl"]["inputs"]
    unit = {"module": "none", "model": "cn-xl", "weight": 0.8, "resize_mode": "Just Resize",
            "image": np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)}
    kw = dict(seed=12, steps=6, cfg_scale=5.0, sampler_name="Euler", scheduler="Karras")
    want = sdrt.load(folder).txt2img("a red cat in a hat", "fog", controlnet=[{**unit, "model": str(tmp_path / "cn-xl")}],
                                     **kw)
    got = sdrt.load(str(tmp_path / "onnx"), backend="onnxruntime").txt2img("a red cat in a hat", "fog",
                                                                            controlnet=[unit], **kw)
    a, b = (np.asarray(r.images[0], dtype=int) for r in (want, got))
    assert np.abs(a - b).max() <= 1
    plain = sdrt.load(str(tmp_path / "onnx"), backend="onnxruntime").txt2img("a red cat in a hat", "fog", **kw)
    assert np.abs(np.asarray(plain.images[0], dtype=int) - b).max() > 8  # the unit did change the picture
