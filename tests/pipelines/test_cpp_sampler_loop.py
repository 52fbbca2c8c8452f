"""The pipeline on the C++ sampler loop (sampler_loop="cpp") against the Python reference loop:
the same images byte for byte, interruption within one step, and the samplers it does not cover
falling back to Python."""
import numpy as np
import pytest

import sdrt


@pytest.fixture(scope="module")
def pipes():
    py = sdrt.load("toy")
    cpp = sdrt.load("toy", sampler_loop="cpp")
    return py, cpp


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M SDE", "LMS", "Heun", "DDIM"])
def test_cpp_loop_images_equal_python_loop(pipes, sampler, monkeypatch):
    py, cpp = pipes
    from sdrt.sampling import native

    used = []
    real = native.sample_native
    monkeypatch.setattr(native, "sample_native", lambda name, *a, **k: used.append(name) or real(name, *a, **k))
    args = dict(seed=11, steps=6, sampler_name=sampler, batch_size=2, cfg_scale=5)
    want = py.txt2img(["a red circle in the top left", "a blue square"], **args)
    assert used == []
    got = cpp.txt2img(["a red circle in the top left", "a blue square"], **args)
    assert used == [sampler]
    for a, b in zip(want.images, got.images):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert got.infotexts == want.infotexts


def test_interrupt_inside_the_cpp_loop_and_fallback(pipes):
    _, cpp = pipes
    calls = []
    result = cpp.txt2img("a blue square", seed=3, steps=20, n_iter=2, sampler_name="Euler",
                         callback=lambda info: calls.append(info["i"]), should_stop=lambda: len(calls) >= 4)
    assert result.interrupted and calls == [0, 1, 2, 3] and len(result.images) == 1
    # UniPC and churn have no C++ loop: the Python samplers run them
    assert len(cpp.txt2img("a blue square", seed=3, steps=3, sampler_name="UniPC").images) == 1
    assert len(cpp.txt2img("a blue square", seed=3, steps=3, sampler_name="Euler", s_churn=0.5).images) == 1
    with pytest.raises(ValueError, match="sampler_loop='fortran'; valid: python, cpp"):
        sdrt.load("toy", sampler_loop="fortran")
