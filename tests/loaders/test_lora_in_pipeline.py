"""LoRAs in generation jobs: <lora:name:w> tags and the loras= argument, applied for the job and
removed after it; merged == run-time; A1111's "Lora hashes"; names only inside the Lora folder."""
import numpy as np
import pytest
from safetensors.torch import save_file

import sdrt
from sdrt.loaders.hashes import autov3
from sdrt.loaders.lora import load_network, merge_networks

from test_lora_networks import kohya_lora


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("a1111")
    (root / "models" / "Lora" / "styles").mkdir(parents=True)
    base = sdrt.load("toy")
    save_file(kohya_lora(base, seed=1), str(root / "models/Lora/styles/ink.safetensors"))
    save_file(kohya_lora(base, seed=2), str(root / "models/Lora/blur.safetensors"))
    return root


@pytest.fixture(scope="module")
def pipe(root):
    return sdrt.load("toy", models_dir=str(root))


def img(result, i=0):
    return np.asarray(result.images[i])


def test_tag_applies_for_the_job_and_the_base_comes_back(pipe, root):
    base = pipe.txt2img("a red circle", seed=4, steps=6)
    tagged = pipe.txt2img("a red circle <lora:ink:1>", seed=4, steps=6)
    assert np.abs(img(base).astype(int) - img(tagged)).mean() > 1  # the LoRA changes the picture
    assert np.array_equal(img(pipe.txt2img("a red circle", seed=4, steps=6)), img(base))  # removed after the job
    text = tagged.infotexts[0]
    assert text.startswith("a red circle <lora:ink:1>\n")  # the prompt as written, tag included
    assert f'Lora hashes: "ink: {autov3(str(root / "models/Lora/styles/ink.safetensors"))}"' in text
    # the API argument does the same as the tag (the tag is cut out of the text before tokenizing)
    by_arg = pipe.txt2img("a red circle", seed=4, steps=6, loras=[("ink", 1.0)])
    assert np.array_equal(img(by_arg), img(tagged))
    by_path = pipe.txt2img("a red circle", seed=4, steps=6, loras=[(str(root / "models/Lora/blur.safetensors"), 0.7)])
    assert np.array_equal(img(by_path), img(pipe.txt2img("a red circle <lora:blur:0.7>", seed=4, steps=6)))


def test_merged_weights_give_the_same_image_as_run_time_application(pipe, root):
    tagged = pipe.txt2img("a blue square <lora:ink:0.8:0.6>", seed=9, steps=6)
    merged = sdrt.load("toy")
    merge_networks(merged.unet, {"text_encoder": merged.text_encoder},
                   [(load_network(str(root / "models/Lora/styles/ink.safetensors")), 0.8, 0.6)])
    assert np.array_equal(img(merged.txt2img("a blue square", seed=9, steps=6)), img(tagged))


@pytest.mark.parametrize("te,unet", [(1.0, 0.0), (0.0, 1.0)])
def test_text_encoder_and_unet_weights_go_where_they_belong(pipe, root, te, unet):
    tagged = pipe.txt2img(f"a green triangle <lora:ink:{te}:{unet}>", seed=2, steps=5)
    merged = sdrt.load("toy")
    merge_networks(merged.unet, {"text_encoder": merged.text_encoder},
                   [(load_network(str(root / "models/Lora/styles/ink.safetensors")), te, unet)])
    assert np.array_equal(img(merged.txt2img("a green triangle", seed=2, steps=5)), img(tagged))
    assert not np.array_equal(img(pipe.txt2img("a green triangle", seed=2, steps=5)), img(tagged))


def test_a_job_that_fails_after_applying_leaves_the_base_model(pipe):
    base = img(pipe.txt2img("a red circle", seed=4, steps=4))

    def fail(info):
        raise RuntimeError("callback failed")
    with pytest.raises(RuntimeError, match="callback failed"):
        pipe.txt2img("a red circle <lora:ink:1>", seed=4, steps=4, callback=fail)
    assert np.array_equal(img(pipe.txt2img("a red circle", seed=4, steps=4)), base)


def test_bad_names_are_refused_and_leave_the_model_as_it_was(pipe, tmp_path):
    base = img(pipe.txt2img("a red circle", seed=4, steps=4))
    with pytest.raises(ValueError, match="refusing"):
        pipe.txt2img("a red circle <lora:../../secret:1>", seed=4, steps=4)
    with pytest.raises(ValueError, match="inkk"):
        pipe.txt2img("a red circle <lora:inkk:1>", seed=4, steps=4)
    with pytest.raises(ValueError, match="weights must be numbers"):
        pipe.txt2img("a red circle <lora:ink:strong>", seed=4, steps=4)
    with pytest.raises(ValueError, match="loras:"):
        pipe.txt2img("a red circle", seed=4, steps=4, loras=["ink"])
    with pytest.raises(ValueError, match=r"loras: \('ink', 'strong'\): weights must be numbers"):
        pipe.txt2img("a red circle", seed=4, steps=4, loras=[("ink", "strong")])
    with pytest.raises(ValueError, match="models_dir"):
        sdrt.load("toy").txt2img("a red circle <lora:ink:1>", seed=4, steps=4)
    assert np.array_equal(img(pipe.txt2img("a red circle", seed=4, steps=4)), base)


def test_convert_merges_a_lora_into_a_single_file_that_loads_back(root, tmp_path, capsys):
    from sdrt.cli import main

    out = tmp_path / "toy-ink.safetensors"
    assert main(["convert", "toy", "-o", str(out), "--lora", "ink:0.8", "--models-dir", str(root)]) == 0
    assert "merged ink" in capsys.readouterr().out
    merged = sdrt.load(str(out))
    runtime = sdrt.load("toy", models_dir=str(root)).txt2img("a blue square <lora:ink:0.8>", seed=9, steps=6)
    # the file holds fp16 weights, so the merged result is compared within fp16 rounding
    got = img(merged.txt2img("a blue square", seed=9, steps=6)).astype(int)
    base = img(sdrt.load("toy").txt2img("a blue square", seed=9, steps=6)).astype(int)
    assert np.abs(got - base).mean() > 0.3  # the LoRA is in the file (measured: 0.70 levels on average)
    assert np.abs(got - img(runtime)).max() <= 2 and np.abs(got - img(runtime)).mean() < 0.05  # measured 1 / 0.001
    assert main(["convert", "toy", "-o", str(tmp_path / "x.ckpt")]) == 2


def test_apply_networks_changes_nothing_when_it_fails_midway(root, monkeypatch):
    import torch

    import sdrt.loaders.lora as lora

    fresh = sdrt.load("toy")
    before = {k: v.clone() for k, v in fresh.unet.state_dict().items()}
    calls = {"n": 0}
    real = lora._patched_weight

    def failing(base, parts):
        calls["n"] += 1
        if calls["n"] == 5:
            raise MemoryError("simulated out of memory")
        return real(base, parts)
    monkeypatch.setattr(lora, "_patched_weight", failing)
    with pytest.raises(MemoryError):
        lora.apply_networks(fresh.unet, {"text_encoder": fresh.text_encoder},
                            [(load_network(str(root / "models/Lora/styles/ink.safetensors")), 1.0, 1.0)])
    assert all(torch.equal(before[k], v) for k, v in fresh.unet.state_dict().items())
