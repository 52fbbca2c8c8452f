"""The shipped toy upscaler: a small RRDBNet file in Real-ESRGAN's key names that sdrt loads like
any upscaler, and that beats PIL Lanczos by at least 1 dB PSNR on held-out toy scenes."""
from __future__ import annotations

import json
import os

import pytest

from sdrt.toy import train_upscaler
from sdrt.toy.train_upscaler import RECORD_NAME, psnr_vs_lanczos, scene_pairs, toy_upscaler_path


def test_shipped_file(toy_upscaler):
    path = toy_upscaler_path()
    assert os.path.getsize(path) < 2 * 2**20
    assert (toy_upscaler.layout, toy_upscaler.scale, toy_upscaler.name) == ("RRDBNet", 2, "ToyESRGAN_2x")
    assert toy_upscaler.hyperparameters == {"num_in_ch": 3, "num_out_ch": 3, **train_upscaler.NETWORK}
    with open(os.path.join(os.path.dirname(path), RECORD_NAME), encoding="utf-8") as f:
        record = json.load(f)
    assert record["evaluation"]["clean_64px"]["gain_db"] >= 1.0


def test_beats_lanczos_on_held_out_scenes(toy_upscaler):
    """36 scenes from a seed stream training never used (including colour/shape/position triples
    held out of training), rendered at 64 px (input) and 128 px (truth)."""
    low, high = scene_pairs(seed=424242, n=36, held_out_only=True)
    result = psnr_vs_lanczos(toy_upscaler, low, high)
    assert result["gain_db"] >= 1.0, result


@pytest.mark.slow
def test_beats_lanczos_after_the_toy_vae(toy_upscaler):
    """The hires-fix case: 64 px inputs that went through the toy VAE (its blur and colour shifts)."""
    low, high = scene_pairs(seed=515151, n=64, held_out_only=True)
    result = psnr_vs_lanczos(toy_upscaler, train_upscaler.vae_roundtrip(low), high)
    assert result["gain_db"] >= 1.0, result
