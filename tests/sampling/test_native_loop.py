"""The C++ sampler loop against the Python samplers (the reference) on the same fake denoiser,
sigmas and noise: max abs difference <= 1e-6 in fp32 (they run the same kernels: measured 0)."""
import numpy as np
import pytest
import torch

from sdrt.sampling import get_sigmas_karras, samplers
from sdrt.sampling.denoiser import DiscreteEpsDenoiser
from sdrt.sampling.brownian import BrownianTreeNoise
from sdrt.sampling.native import NATIVE_METHODS, sample_native
from sdrt.sampling.schedules import discrete_sigmas, scaled_linear_betas

from test_samplers_vs_diffusers import fake_unet


@pytest.mark.parametrize("name", list(NATIVE_METHODS))
@pytest.mark.parametrize("steps", [1, 7])
def test_cpp_loop_equals_python_sampler(rng, name, steps):
    w = torch.from_numpy(rng.uniform(0.2, 1.2, (1, 4, 1, 1)).astype(np.float32))
    den = DiscreteEpsDenoiser(fake_unet(w), discrete_sigmas(scaled_linear_betas()))
    model = lambda x, s: den(x, s, None)  # noqa: E731
    sigmas = get_sigmas_karras(steps, 0.03, 14.6)
    x0 = torch.from_numpy(rng.standard_normal((2, 4, 8, 8)).astype(np.float32)) * 14.6
    seed = int(rng.integers(0, 2**31))
    g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    kwargs = {"eta": 0.0} if name == "DDIM" else {}
    seen_py, seen_cpp = [], []
    if name.startswith("DPM++ 2M SDE"):  # A1111's Brownian tree, one per run with the same seeds
        kwargs["noise_sampler"] = BrownianTreeNoise(x0, sigmas, [seed, seed + 1])
        cpp_kwargs = {**kwargs, "noise_sampler": BrownianTreeNoise(x0, sigmas, [seed, seed + 1])}
    else:
        cpp_kwargs = kwargs
    want = samplers[name](model, x0, sigmas, noise=lambda: torch.randn(x0.shape, generator=g1),
                          callback=lambda d: seen_py.append((d["i"], d["sigma"])), **kwargs)
    got = sample_native(name, model, x0, sigmas, noise=lambda: torch.randn(x0.shape, generator=g2),
                        callback=lambda d: seen_cpp.append((d["i"], d["sigma"])), **cpp_kwargs)
    assert (got - want).abs().max().item() <= 1e-6
    assert seen_cpp == seen_py
    assert not torch.equal(got, x0)


def test_bad_calls_name_the_problem():
    x = torch.randn(1, 4, 2, 2)
    with pytest.raises(ValueError, match="has no C\\+\\+ loop"):
        sample_native("UniPC", lambda x, s: x, x, torch.tensor([1.0, 0.0]))
    from sdrt import _C

    with pytest.raises(ValueError, match="method 'unipc' is not in the C\\+\\+ loop"):
        _C.sample_loop("unipc", x, [1.0, 0.0], lambda x, s: x)
    with pytest.raises(ValueError, match="'sigmas' must be finite"):
        _C.sample_loop("euler", x, [1.0, -1.0], lambda x, s: x)
    with pytest.raises(ValueError, match="needs 'noise'"):
        _C.sample_loop("euler_ancestral", x, [1.0, 0.5, 0.0], lambda x, s: x)
