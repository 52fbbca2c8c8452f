"""sdrt.kernels against the float64 torch reference on fresh random inputs.

Tolerances (max abs error relative to the reference's magnitude, ``|err| <= tol * (1 + |ref|)``):
fp32 1e-6 x a small factor for the number of terms, fp16 1e-3 (half an ulp is 4.9e-4), bf16 8e-3
(half an ulp is 3.9e-3). The reference sees the same rounded inputs, so only the kernel's own
arithmetic and the output rounding are measured.
"""
import numpy as np
import pytest
import torch

from sdrt import kernels
from sdrt.kernels import reference as ref

TOL = {"float32": 4e-6, "float16": 1e-3, "bfloat16": 8e-3}
SHAPES = [(1, 4, 64, 64), (3, 4, 17, 23), (2, 16, 9, 5), (7,)]


def make(rng, shape, dtype, kind):
    """A random tensor of `dtype` held as `kind` ('numpy', 'torch' or 'cuda'), plus its float64 CPU value."""
    a = (rng.standard_normal(shape) * rng.uniform(0.5, 3.0)).astype(np.float32)
    t = torch.from_numpy(a).to(getattr(torch, dtype))
    value = t.double()
    if kind == "numpy":
        return t.float().numpy().astype(dtype), value
    return (t.cuda() if kind == "cuda" else t), value


def as_f64(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float64)) if isinstance(a, np.ndarray) else a.double().cpu()


def assert_close(got, want, dtype, what="", magnitude=None):
    """`magnitude` (default |want|) is the size of the terms summed into each element: a sum whose
    terms cancel is only as exact as its largest term."""
    got = as_f64(got)
    magnitude = want.abs() if magnitude is None else magnitude
    err = ((got - want).abs() / (1 + magnitude)).max().item()
    assert err <= TOL[dtype], f"{what}: relative error {err:.3g} > {TOL[dtype]} ({dtype})"


CASES = [("float32", "numpy"), ("float16", "numpy"), ("float32", "torch"), ("float16", "torch"), ("bfloat16", "torch")]
# The CUDA twins run the same tests on the lent GPU (bench/gpu_suite.sh); skipped without one.
CASES += [pytest.param(d, "cuda", marks=pytest.mark.cuda, id=f"{d}-cuda") for d in ("float32", "float16", "bfloat16")]


@pytest.mark.parametrize("dtype,kind", CASES)
@pytest.mark.parametrize("shape", SHAPES)
def test_cfg_combine_with_and_weights(rng, dtype, kind, shape):
    n_conds = int(rng.integers(1, 5))
    uncond, u64 = make(rng, shape, dtype, kind)
    conds, c64 = make(rng, (n_conds, *shape), dtype, kind)
    weights = rng.uniform(-0.5, 1.5, n_conds).tolist()
    scale = float(rng.uniform(1.0, 12.0))
    got = kernels.cfg_combine(uncond, conds, weights, scale)
    assert type(got) is type(uncond) and tuple(got.shape) == tuple(shape)
    terms = u64.abs() + sum(abs(w * scale) * (c - u64).abs() for w, c in zip(weights, c64))
    assert_close(got, ref.cfg_combine(u64, c64, weights, scale), dtype, "cfg_combine", magnitude=terms)


@pytest.mark.parametrize("dtype,kind", CASES)
@pytest.mark.parametrize("shape", SHAPES)
def test_euler_step(rng, dtype, kind, shape):
    x, x64 = make(rng, shape, dtype, kind)
    den, d64 = make(rng, shape, dtype, kind)
    sigma = float(rng.uniform(0.1, 14.6))
    sigma_next = float(rng.uniform(0.0, sigma))
    got = kernels.euler_step(x, den, sigma, sigma_next)
    assert_close(got, ref.euler_step(x64, d64, sigma, sigma_next), dtype, "euler_step")


@pytest.mark.parametrize("dtype,kind", CASES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("eta", [1.0, 0.5, 0.0])
def test_euler_ancestral_step(rng, dtype, kind, shape, eta):
    x, x64 = make(rng, shape, dtype, kind)
    den, d64 = make(rng, shape, dtype, kind)
    noise, n64 = make(rng, shape, dtype, kind)
    sigma = float(rng.uniform(0.1, 14.6))
    sigma_next = float(rng.uniform(0.0, sigma))
    got = kernels.euler_ancestral_step(x, den, noise, sigma, sigma_next, eta=eta, s_noise=1.003)
    want = ref.euler_ancestral_step(x64, d64, n64, sigma, sigma_next, eta=eta, s_noise=1.003)
    assert_close(got, want, dtype, "euler_ancestral_step")


def test_ancestral_step_sigmas_match_reference(rng):
    for _ in range(100):
        sigma = float(rng.uniform(0.01, 20))
        sigma_next = float(rng.uniform(0, sigma))
        eta = float(rng.uniform(0, 1.5))
        np.testing.assert_allclose(kernels.ancestral_step_sigmas(sigma, sigma_next, eta),
                                   ref.ancestral_step_sigmas(sigma, sigma_next, eta), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype,kind", CASES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("order", ["first", "second", "last"])
def test_dpmpp_2m_step(rng, dtype, kind, shape, order):
    x, x64 = make(rng, shape, dtype, kind)
    den, d64 = make(rng, shape, dtype, kind)
    old, o64 = make(rng, shape, dtype, kind)
    sigma = float(rng.uniform(0.1, 10.0))
    sigma_prev = sigma * float(rng.uniform(1.05, 2.0))
    sigma_next = 0.0 if order == "last" else sigma * float(rng.uniform(0.3, 0.95))
    if order == "first":
        got = kernels.dpmpp_2m_step(x, den, sigma, sigma_next)
        want = ref.dpmpp_2m_step(x64, d64, sigma, sigma_next)
    else:
        got = kernels.dpmpp_2m_step(x, den, sigma, sigma_next, old_denoised=old, sigma_prev=sigma_prev)
        want = ref.dpmpp_2m_step(x64, d64, sigma, sigma_next, old_denoised=o64, sigma_prev=sigma_prev)
    assert_close(got, want, dtype, "dpmpp_2m_step")


@pytest.mark.parametrize("dtype,kind", CASES)
@pytest.mark.parametrize("shape", SHAPES)
def test_scale_unscale_latents(rng, dtype, kind, shape):
    x, x64 = make(rng, shape, dtype, kind)
    factor, shift = float(rng.uniform(0.1, 1.5)), float(rng.uniform(-0.5, 0.5))
    scaled = kernels.scale_latents(x, factor, shift)
    assert_close(scaled, ref.scale_latents(x64, factor, shift), dtype, "scale_latents")
    back = kernels.unscale_latents(x, factor, shift)
    assert_close(back, ref.unscale_latents(x64, factor, shift), dtype, "unscale_latents")


def test_scale_then_unscale_round_trips_fp32(rng):
    x = rng.standard_normal((2, 4, 32, 32)).astype(np.float32)
    back = kernels.unscale_latents(kernels.scale_latents(x, 0.18215, 0.0), 0.18215, 0.0)
    np.testing.assert_allclose(back, x, rtol=1e-6, atol=1e-6)


def _boundary_mask(want_float: torch.Tensor, rounding: bool) -> torch.Tensor:
    """Pixels whose exact value lies within 1e-3 of a truncation/rounding boundary: fp32 vs fp64
    arithmetic may legitimately land on either side there."""
    frac = want_float - want_float.floor()
    edge = 0.5 if rounding else 0.0
    return ((frac - edge).abs() < 1e-3) | ((frac - edge).abs() > 1 - 1e-3)


@pytest.mark.parametrize("dtype,kind", CASES)
@pytest.mark.parametrize("rounding", [False, True])
@pytest.mark.parametrize("channels", [3, 4, 16])
def test_to_rgb_uint8(rng, dtype, kind, rounding, channels):
    n, h, w = int(rng.integers(1, 4)), int(rng.integers(1, 40)), int(rng.integers(1, 40))
    x, x64 = make(rng, (n, channels, h, w), dtype, kind)
    matrix = None if channels == 3 and rounding else rng.uniform(-0.5, 0.5, (channels, 3)).tolist()
    bias = rng.uniform(-0.2, 0.2, 3).tolist() if matrix is not None else None
    got = kernels.to_rgb_uint8(x, matrix=matrix, bias=bias, round=rounding)
    assert tuple(got.shape) == (n, h, w, 3)
    got = torch.as_tensor(np.asarray(got)) if isinstance(got, np.ndarray) else got.cpu()
    assert got.dtype == torch.uint8
    # exact float64 pre-quantisation values
    v = x64 if matrix is None else torch.einsum("nchw,cr->nrhw", x64, torch.tensor(matrix, dtype=torch.float64))
    if bias is not None:
        v = v + torch.tensor(bias, dtype=torch.float64).view(1, 3, 1, 1)
    v = (((v + 1) / 2).clamp(0, 1) * 255).permute(0, 2, 3, 1)
    want = (v + 0.5).floor().clamp(max=255) if rounding else v.floor()
    diff = (got.double() - want).abs()
    assert diff.max().item() <= 1
    assert not (diff > 0)[~_boundary_mask(v, rounding)].any(), "mismatch away from a rounding boundary"
    # the torch-ops reference agrees the same way
    r = ref.to_rgb_uint8(x64.float(), matrix, bias, round=rounding)
    assert (r.double() - got.double()).abs().max().item() <= 1


def test_in_place_update_is_allowed(rng):
    x = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    den = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    want = ref.euler_step(torch.from_numpy(x).double(), torch.from_numpy(den).double(), 3.0, 2.0)
    out = kernels.euler_step(x, den, 3.0, 2.0, out=x)
    assert out is x
    assert_close(x, want, "float32")


def test_dlpack_capsules_are_accepted(rng):
    from torch.utils.dlpack import to_dlpack

    from sdrt import _C

    x = torch.from_numpy(rng.standard_normal((2, 4, 8, 8)).astype(np.float32))
    den = torch.from_numpy(rng.standard_normal((2, 4, 8, 8)).astype(np.float32))
    out = torch.empty_like(x)
    _C.euler_step(to_dlpack(out), to_dlpack(x), to_dlpack(den), 5.0, 4.0)
    assert_close(out, ref.euler_step(x.double(), den.double(), 5.0, 4.0), "float32")


def test_large_tensor_uses_threads_correctly(rng):
    # above the OpenMP threshold and not a multiple of the block size
    shape = (8, 4, 128, 131)
    x, x64 = make(rng, shape, "float32", "numpy")
    den, d64 = make(rng, shape, "float32", "numpy")
    assert_close(kernels.euler_step(x, den, 7.0, 5.5), ref.euler_step(x64, d64, 7.0, 5.5), "float32")


@pytest.mark.cuda
def test_cuda_kernels_run_on_the_current_stream(rng):
    """Work queued on a side stream sees the inputs written on it and finishes before its sync."""
    shape = (4, 4, 128, 128)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        x = torch.randn(shape, device="cuda")
        den = torch.randn(shape, device="cuda")
        got = kernels.euler_step(x, den, 9.0, 7.0)
    stream.synchronize()
    want = ref.euler_step(x.double().cpu(), den.double().cpu(), 9.0, 7.0)
    assert_close(got, want, "float32", "euler_step on a side stream")


@pytest.mark.parametrize("dtype,kind", CASES)
@pytest.mark.parametrize("n_inputs", [1, 4, 16])
def test_linear_combination(rng, dtype, kind, n_inputs):
    shape = (2, 4, 13, 9)
    pairs = [make(rng, shape, dtype, kind) for _ in range(n_inputs)]
    weights = rng.uniform(-2, 2, n_inputs).tolist()
    bias = float(rng.uniform(-1, 1))
    got = kernels.linear_combination([p[0] for p in pairs], weights, bias)
    values = [p[1] for p in pairs]
    terms = abs(bias) + sum(abs(w) * v.abs() for w, v in zip(weights, values))
    assert_close(got, ref.linear_combination(values, weights, bias), dtype, "linear_combination", magnitude=terms)
