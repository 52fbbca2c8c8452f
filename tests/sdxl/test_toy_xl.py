"""Toy-XL, the shipped SDXL-architecture toy: it loads by name sharing the toy's text encoder and
VAE, diffusers' own StableDiffusionXLPipeline runs the same files to the same picture, it round-trips
through an A1111 single file, and it draws what the held-out acceptance prompts say (the toy targets,
against the recorded baseline minus 5 points, as tests/toy/test_acceptance.py does for the toy)."""
import json
import os

import numpy as np
import pytest
import torch

import sdrt
from sdrt.pipelines.rng import ImageRNG
from sdrt.toy.acceptance import THRESHOLDS, run_acceptance

from tiny_sdxl import tokenizer_2

BASELINE = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "results", "toy_xl_acceptance.json")
MARGIN = 0.05


@pytest.fixture(scope="module")
def toy_xl():
    return sdrt.load("toy-xl")


def test_toy_xl_is_sdxl_shaped_and_shares_the_toys_text_encoder_and_vae(toy_xl):
    toy = sdrt.load("toy")
    assert toy_xl.info.family == "toy-xl" and toy_xl.info.added_time_ids == 6
    assert toy_xl.unet.config.addition_embed_type == "text_time" and len(toy_xl.unet.config.block_out_channels) == 3
    assert max(toy_xl.unet.config.transformer_layers_per_block) > 1
    for mine, theirs in ((toy_xl.text_encoder, toy.text_encoder), (toy_xl.vae, toy.vae)):
        assert all(torch.equal(a, b) for a, b in zip(mine.state_dict().values(), theirs.state_dict().values()))
    assert not os.path.exists(os.path.join(sdrt.loading.toy_model_path("toy-xl"), "vae"))  # shipped once


def test_diffusers_runs_the_shipped_files_to_the_same_picture(toy_xl):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    toy = sdrt.load("toy")
    ref = StableDiffusionXLPipeline.from_pretrained(sdrt.loading.toy_model_path("toy-xl"), local_files_only=True,
                                                    torch_dtype=torch.float32,
                                                    text_encoder=toy.text_encoder, vae=toy.vae,
                                                    tokenizer=toy.tokenizer, tokenizer_2=tokenizer_2())
    ref.set_progress_bar_config(disable=True)
    ref.scheduler = EulerDiscreteScheduler.from_config(ref.scheduler.config, use_karras_sigmas=True,
                                                       timestep_spacing="linspace")
    prompt = "a large red circle in the top left on a white background"
    got = toy_xl.txt2img(prompt, seed=7, steps=12, cfg_scale=5.0, sampler_name="Euler", scheduler="Karras")
    want = ref(prompt, num_inference_steps=12, guidance_scale=5.0, height=64, width=64,
               latents=ImageRNG((4, 8, 8), [7]).first(), output_type="np").images[0] * 255.0
    assert np.abs(np.asarray(got.images[0], dtype=np.float64) - np.floor(want)).max() <= 1


def test_single_file_round_trip(toy_xl, tmp_path):
    path = str(tmp_path / "toy_xl.safetensors")
    toy_xl.save_single_file(path)
    loaded = sdrt.load(path)
    assert loaded.info.family == "toy-xl"
    a = toy_xl.txt2img("a blue square in the center", seed=3, steps=8)
    b = loaded.txt2img("a blue square in the center", seed=3, steps=8)
    assert np.array_equal(np.asarray(a.images[0]), np.asarray(b.images[0]))  # fp16 weights both ways


def floors(sampler: str) -> dict:
    with open(BASELINE, encoding="utf-8") as f:
        runs = {r["sampler"]: r["accuracy"] for r in json.load(f)["runs"]}
    return {k: max(target, runs[sampler][k] - MARGIN) for k, target in THRESHOLDS.items()}


# Euler a under -m slow: CI's time goes to the other sampler, here and on ONNX Runtime below
@pytest.mark.parametrize("sampler", [pytest.param("Euler a", marks=pytest.mark.slow), "DPM++ 2M Karras"])
def test_toy_xl_acceptance(toy_xl, sampler):
    result = run_acceptance(toy_xl, sampler_name=sampler, steps=20, cfg_scale=5.0)
    print(f"toy-XL {sampler}: {result['accuracy']}")
    for key, minimum in floors(sampler).items():
        assert result["accuracy"][key] >= minimum, f"toy-XL {sampler}: {key} {result['accuracy'][key]:.1%} < {minimum:.1%}"


def test_toy_xl_acceptance_on_onnxruntime(toy_xl, tmp_path):
    """Exported to ONNX and run by ONNX Runtime, toy-XL meets the same floors (DPM++ 2M Karras)."""
    from sdrt.export import to_onnx

    to_onnx(toy_xl, str(tmp_path / "onnx"))
    ort_pipe = sdrt.load(str(tmp_path / "onnx"), backend="onnxruntime")
    assert ort_pipe.info.family == "toy-xl"
    result = run_acceptance(ort_pipe, sampler_name="DPM++ 2M Karras", steps=20, cfg_scale=5.0)
    print(f"toy-XL on ONNX Runtime: {result['accuracy']}")
    for key, minimum in floors("DPM++ 2M Karras").items():
        assert result["accuracy"][key] >= minimum, f"toy-XL ORT: {key} {result['accuracy'][key]:.1%} < {minimum:.1%}"


def test_the_toy_refines_toy_xl_and_is_named_so(toy_xl):
    """The toy shares toy-XL's latent space, so it can take over as a refiner (an SD1-style model
    after an SDXL one: its own text conditioning at the switch); the infotext names it "toy"."""
    plain = toy_xl.txt2img("a red circle in the top left", seed=2, steps=10)
    refined = toy_xl.txt2img("a red circle in the top left", seed=2, steps=10, refiner_checkpoint="toy",
                             refiner_switch_at=0.5)
    assert "Refiner: toy, Refiner switch at: 0.5" in refined.infotexts[0]
    assert not np.array_equal(np.asarray(plain.images[0]), np.asarray(refined.images[0]))
