"""txt2img on the shipped toy model: seeds, batches, infotext, PNG metadata, errors, CLI."""
import io
import subprocess
import sys

import numpy as np
import pytest

import sdrt
from sdrt.pipelines.png import read_parameters


@pytest.fixture(scope="module")
def pipe():
    return sdrt.load("toy")


def arr(image):
    return np.asarray(image, dtype=np.int16)


def png_bytes(image, infotext):
    from sdrt.pipelines.png import save_png
    buf = io.BytesIO()
    save_png(image, buf, infotext)
    return buf.getvalue()


def test_batch_of_seeds_equals_single_runs_byte_for_byte(pipe):
    prompts = ["a red circle in the top left", "a blue square", "a green triangle at the bottom", "a red circle"]
    a = pipe.txt2img(prompts, seed=42, batch_size=4, steps=6, sampler_name="DPM++ 2M Karras")
    assert a.seeds == [42, 43, 44, 45]
    assert a.images[0].size == (64, 64)
    for i in range(4):
        single = pipe.txt2img(prompts[i], seed=42 + i, steps=6, sampler_name="DPM++ 2M Karras")
        # (the infotexts differ only by the seed: a batch writes each image's own)
        assert png_bytes(a.images[i], a.infotexts[i]) == png_bytes(single.images[0], single.infotexts[0])
    assert np.abs(arr(a.images[0]) - arr(a.images[3])).mean() > 1  # different seeds, different pictures


def test_same_seed_same_png_across_runs(pipe):
    r1 = pipe.txt2img("a pink square in the middle", seed=5, steps=5, batch_size=2)
    r2 = pipe.txt2img("a pink square in the middle", seed=5, steps=5, batch_size=2)
    assert [png_bytes(i, t) for i, t in zip(r1.images, r1.infotexts)] == \
        [png_bytes(i, t) for i, t in zip(r2.images, r2.infotexts)]


def test_throughput_batches_stay_within_rounding_of_single_runs():
    fast = sdrt.load("toy", batch_invariant=False)
    a = fast.txt2img("a red circle in the top left", seed=42, batch_size=2, steps=8)
    c = fast.txt2img("a red circle in the top left", seed=43, batch_size=1, steps=8)
    assert np.abs(arr(a.images[1]) - arr(c.images[0])).max() <= 2  # batched convolutions round differently


def test_random_seed_is_reported(pipe):
    r = pipe.txt2img("a blue square", seed=-1, steps=4, n_iter=2)
    assert len(r.seeds) == 2 and r.seeds[1] == r.seeds[0] + 1 and 0 <= r.seeds[0] < 4294967294


def test_infotext_is_a1111_format(pipe):
    r = pipe.txt2img("a green triangle", "blurry", seed=7, steps=5, cfg_scale=5.5, sampler_name="DPM++ 2M Karras")
    assert r.infotexts[0] == ("a green triangle\nNegative prompt: blurry\nSteps: 5, Sampler: DPM++ 2M, "
                              "Schedule type: Karras, CFG scale: 5.5, Seed: 7, Size: 64x64, Model: toy, "
                              f"RNG: CPU, Version: sdrt {sdrt.__version__}")


@pytest.mark.parametrize("sampler,eta,field", [("DDIM", 0.5, "Eta DDIM: 0.5"), ("Euler a", 0.8, "Eta: 0.8"),
                                               ("DDIM", 0.0, None), ("Euler a", 1.0, None), ("Euler", 0.5, None)])
def test_eta_is_written_only_when_not_the_samplers_default(pipe, sampler, eta, field):
    text = pipe.txt2img("a red circle", seed=3, steps=3, sampler_name=sampler, eta=eta).infotexts[0]
    assert ("Eta" in text) == (field is not None) and (field is None or f"{field}, " in text), text


@pytest.mark.parametrize("kwargs,match", [
    (dict(width=60), r"width=60; must be a positive multiple of 8"),
    (dict(steps=0), r"steps=0; must be >= 1"),
    (dict(sampler_name="Heunn"), r"sampler_name='Heunn' is unknown"),
    (dict(seed=-5), r"seed=-5"),
    (dict(batch_size=2, prompt=["a", "b", "c"]), r"prompt: expected a string or a list of 2 strings"),
    (dict(cfg_scale=float("nan")), r"cfg_scale=nan; must be a finite number"),
    (dict(prompt="x" * 10_000_000), r"prompt: 10000000 characters; at most 65536"),
    (dict(subseed_strength=1.5), r"subseed_strength=1.5; must be in \[0, 1\]"),
    (dict(scheduler="Karas"), r"scheduler='Karas' is unknown"),
])
def test_bad_arguments_raise_clear_errors(pipe, kwargs, match):
    prompt = kwargs.pop("prompt", "a red circle")
    with pytest.raises(ValueError, match=match):
        pipe.txt2img(prompt, **kwargs)


def test_cli_txt2img_writes_png_with_parameters(tmp_path):
    out = tmp_path / "img.png"
    res = subprocess.run([sys.executable, "-m", "sdrt.cli", "txt2img", "a yellow square in the center",
                          "-o", str(out), "--seed", "5", "--steps", "6", "-q"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    params = read_parameters(str(out))
    assert params.startswith("a yellow square in the center\nSteps: 6, Sampler: Euler a") and "Seed: 5" in params


def test_cli_reports_bad_input_without_traceback(tmp_path):
    res = subprocess.run([sys.executable, "-m", "sdrt.cli", "txt2img", "x", "--model", str(tmp_path / "nope"),
                          "-o", str(tmp_path / "a.png")], capture_output=True, text=True)
    assert res.returncode == 2
    assert "no such file or folder" in res.stderr and "Traceback" not in res.stderr


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match=r"backend='mlx' is not available; valid: torch, onnxruntime, openvino, tensorrt"):
        sdrt.load("toy", backend="mlx")
    with pytest.raises(ValueError, match=r"the tensorrt backend runs an export folder"):
        sdrt.load("toy", backend="tensorrt")
    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"model.safetensors: too short for a safetensors file"):
        sdrt.load(str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"is not a diffusers folder"):
        sdrt.load(str(tmp_path))


def test_should_stop_interrupts_within_one_step(pipe):
    calls = []
    result = pipe.txt2img("a blue square", seed=3, steps=20, n_iter=3,
                          callback=lambda info: calls.append(info["i"]), should_stop=lambda: len(calls) >= 5)
    assert result.interrupted and calls == [0, 1, 2, 3, 4]
    assert len(result.images) == 1 and result.images[0].size == (64, 64)  # the first batch, later ones never ran
    assert not pipe.txt2img("a blue square", seed=3, steps=2).interrupted


def test_lcm_sampler_runs_on_its_own_timesteps(pipe, monkeypatch):
    timesteps = []
    unet = pipe.denoiser.unet

    def recording_unet(x, t, context):
        timesteps.append(t.tolist())
        return unet(x, t, context)
    monkeypatch.setattr(pipe.denoiser, "unet", recording_unet)
    r = pipe.txt2img("a red circle", seed=3, steps=4, cfg_scale=1.5, sampler_name="LCM")
    assert "Sampler: LCM, Schedule type: Automatic" in r.infotexts[0]
    # A1111's LCM: 4 steps evenly over the 50 original timesteps 999 ... 19, each rounded to one of
    # them; the UNet sees cond and uncond at the same integer timestep
    assert timesteps == [[t, t] for t in (999, 679, 339, 19)]


def test_should_skip_ends_only_the_current_batch(pipe):
    seen, skips = [], iter([False] * 3 + [True])
    result = pipe.txt2img("a blue square", seed=3, steps=6, n_iter=2, callback=lambda d: seen.append(
        (d["iteration"], d["n_iter"], d["i"])), should_skip=lambda: next(skips, False))
    assert not result.interrupted and len(result.images) == 2
    assert seen == [(0, 2, 0), (0, 2, 1), (0, 2, 2)] + [(1, 2, i) for i in range(6)]
    full = pipe.txt2img("a blue square", seed=3, steps=6, n_iter=2)
    # the second batch ran in full: the same picture as without the skip; the first stopped early
    assert np.array_equal(arr(result.images[1]), arr(full.images[1]))
    assert not np.array_equal(arr(result.images[0]), arr(full.images[0]))
