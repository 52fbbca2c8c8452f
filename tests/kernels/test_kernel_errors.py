"""Bad input to a kernel raises a clear Python exception naming the argument, never a crash."""
import numpy as np
import pytest
import torch

from sdrt import _C, kernels


@pytest.fixture
def xs(rng):
    return [rng.standard_normal((2, 4, 8, 8)).astype(np.float32) for _ in range(3)]


def test_wrong_dtype_names_the_argument(xs):
    x, den, _ = xs
    with pytest.raises(TypeError, match=r"euler_step: argument 'denoised' has dtype float16 but 'out' has dtype float32"):
        kernels.euler_step(x, den.astype(np.float16), 1.0, 0.5)
    with pytest.raises(TypeError, match=r"argument 'x' has unsupported element format 'd'"):
        kernels.euler_step(x.astype(np.float64), den, 1.0, 0.5, out=np.empty_like(x))
    with pytest.raises(TypeError, match=r"argument 'x' has unsupported DLPack dtype"):
        kernels.euler_step(torch.zeros(3, dtype=torch.int32), torch.ones(3, dtype=torch.int32), 1.0, 0.5,
                           out=torch.empty(3))


def test_shape_mismatch_names_both_arguments(xs):
    x, den, noise = xs
    with pytest.raises(ValueError, match=r"argument 'noise' has shape \(1, 4, 8, 8\) but 'out' has shape \(2, 4, 8, 8\)"):
        kernels.euler_ancestral_step(x, den, noise[:1], 1.0, 0.5)
    with pytest.raises(ValueError, match=r"argument 'conds' has shape \(2, 4, 8, 8\); expected \(len\(weights\), \*uncond.shape\) = \(1, 2, 4, 8, 8\)"):
        kernels.cfg_combine(x, den, [1.0], 7.0)


def test_non_contiguous_is_refused(xs):
    x, den, _ = xs
    with pytest.raises(ValueError, match=r"argument 'x' must be contiguous"):
        kernels.euler_step(x[..., ::2], den[..., ::2].copy(), 1.0, 0.5, out=np.empty((2, 4, 8, 4), np.float32))
    t = torch.from_numpy(den).transpose(2, 3)
    with pytest.raises(ValueError, match=r"argument 'denoised' must be contiguous"):
        kernels.euler_step(torch.from_numpy(x), t, 1.0, 0.5)


def test_read_only_or_wrong_out(xs):
    x, den, _ = xs
    ro = x.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"argument 'out' must be a writable buffer"):
        kernels.euler_step(x, den, 1.0, 0.5, out=ro)
    with pytest.raises(TypeError, match=r"argument 'out' must have dtype uint8"):
        kernels.to_rgb_uint8(x[:, :3].copy(), out=np.empty((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"argument 'out' has shape \(2, 8, 7, 3\); expected \(N, H, W, 3\)"):
        kernels.to_rgb_uint8(x[:, :3].copy(), out=np.empty((2, 8, 7, 3), np.uint8))


def test_partial_overlap_is_refused(rng):
    buf = rng.standard_normal(100).astype(np.float32)
    with pytest.raises(ValueError, match=r"argument 'out' partially overlaps 'x'"):
        kernels.euler_step(buf[:50], buf[50:].copy(), 1.0, 0.5, out=buf[10:60])


def test_not_a_tensor_and_none():
    with pytest.raises(TypeError, match=r"argument 'x' has type list"):
        _C.euler_step(np.empty(2, np.float32), [1.0, 2.0], np.empty(2, np.float32), 1.0, 0.5)
    with pytest.raises(TypeError, match=r"argument 'uncond' is None"):
        _C.cfg_combine(np.empty(2, np.float32), None, np.empty((1, 2), np.float32), [1.0], 7.0)


@pytest.mark.parametrize("call,match", [
    (lambda x, d, n: kernels.euler_step(x, d, 0.0, 0.0), r"'sigma' must be > 0"),
    (lambda x, d, n: kernels.euler_step(x, d, float("nan"), 0.0), r"'sigma' must be finite"),
    (lambda x, d, n: kernels.euler_ancestral_step(x, d, n, 1.0, 2.0), r"'sigma_next' must be in \[0, sigma\]"),
    (lambda x, d, n: kernels.euler_ancestral_step(x, d, n, 1.0, 0.5, eta=-1), r"'eta' must be >= 0"),
    (lambda x, d, n: kernels.dpmpp_2m_step(x, d, 1.0, 0.5, old_denoised=n), r"'sigma_prev' is required"),
    (lambda x, d, n: kernels.dpmpp_2m_step(x, d, 1.0, 0.5, old_denoised=n, sigma_prev=0.9), r"'sigma_prev' must be > sigma"),
    (lambda x, d, n: kernels.scale_latents(x, 0.0), r"'scaling_factor' must be non-zero"),
    (lambda x, d, n: kernels.cfg_combine(x, np.stack([d] * 16), [1.0] * 16, 7.0), r"at most 15 conds"),
    (lambda x, d, n: kernels.cfg_combine(x, d[None], [], 7.0), r"'weights' must name at least one cond"),
    (lambda x, d, n: kernels.to_rgb_uint8(x), r"without 'matrix' it must be RGB"),
    (lambda x, d, n: kernels.linear_combination([x, d], [1.0]), r"'inputs' has 2 tensors but 'weights' has 1"),
    (lambda x, d, n: kernels.linear_combination([x] * 17, [1.0] * 17), r"at most 16 inputs"),
    (lambda x, d, n: kernels.linear_combination([], []), r"at least one tensor"),
    (lambda x, d, n: kernels.to_rgb_uint8(x, matrix=[[1, 0, 0]] * 3), r"'matrix' has 3 rows; expected one per channel"),
    (lambda x, d, n: kernels.to_rgb_uint8(x[0]), r"'x' must be \(N, C, H, W\)"),
])
def test_bad_scalars_and_options(xs, call, match):
    with pytest.raises(ValueError, match=match):
        call(*xs)


def test_cuda_tensor_without_a_usable_gpu_is_a_clear_error():
    """A CPU-only build names the missing CUDA support; a CUDA build on a machine without a GPU
    (this project's CI) reports the CUDA runtime's error. Neither crashes."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the fake CUDA capsule below would be dereferenced")
    tensors = [torch.ones(4) for _ in range(3)]
    expected = r"cudaSetDevice: " if _C.build_info()["cuda"] else r"built without CUDA"
    with pytest.raises((ValueError, RuntimeError), match=expected):
        _C.euler_step(*[_fake_cuda_capsule(t) for t in tensors], 1.0, 0.5)


def _fake_cuda_capsule(t):
    """A real DLPack capsule for `t` with its device field rewritten to CUDA (never dereferenced)."""
    import ctypes

    from torch.utils.dlpack import to_dlpack

    cap = to_dlpack(t)
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    ptr = get(cap, b"dltensor")
    # DLTensor: void* data (8 bytes), then DLDevice {int32 device_type, int32 device_id}
    ctypes.c_int32.from_address(ptr + 8).value = 2
    return cap


def test_build_names_the_cuda_attention_head_dims():
    """The build reports the head dims its CUDA kernels cover (kernels/cuda/attention_head_dims.h):
    those of SD 1.x (40, 80, 160) and SD 2.x / SDXL (64) when built with CUDA, none without."""
    from sdrt import _C

    info = _C.build_info()
    assert info["cuda_attention_head_dims"] == ([40, 64, 80, 160] if info["cuda"] else [])
