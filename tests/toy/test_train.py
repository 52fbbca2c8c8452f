"""The trainer still learns, and is reproducible from its seed (slow: trains briefly)."""
import json

import pytest
import torch
from safetensors.torch import load_file

from sdrt.toy import train

pytestmark = pytest.mark.slow


def _first_last(history):
    return history[0][1], history[-1][1]


def test_short_training_lowers_both_losses_and_is_reproducible(tmp_path):
    kwargs = dict(seed=5, vae_steps=100, vae_batch=8, dataset_size=256, unet_steps=60, unet_batch=32,
                  log=lambda msg: None)
    a = train.train(str(tmp_path / "a"), **kwargs)
    vae_first, vae_last = a["vae"]["loss_history"][0][1], a["vae"]["loss_history"][-1][1]
    unet_hist = a["unet_and_text_encoder"]["loss_history"]
    assert vae_last < 0.75 * vae_first, a["vae"]["loss_history"]  # (the history is smoothed: it lags)
    assert unet_hist[-1][1] < unet_hist[0][1], unet_hist
    assert 0.05 < a["scaling_factor"] < 20

    b = train.train(str(tmp_path / "b"), **kwargs)
    for part, name in (("unet", "diffusion_pytorch_model.safetensors"), ("vae", "diffusion_pytorch_model.safetensors"),
                       ("text_encoder", "model.safetensors")):
        wa, wb = load_file(tmp_path / "a" / part / name), load_file(tmp_path / "b" / part / name)
        assert wa.keys() == wb.keys()
        assert all(torch.equal(wa[k], wb[k]) for k in wa), f"{part} differs between two runs with one seed"
    record = json.loads((tmp_path / "a" / "toy_training.json").read_text())
    assert record["seed"] == 5 and record["held_out_combinations"]
