"""The CUDA attention kernels (fp16 / bf16, head dims 40, 64, 80, 160) against float64 SDPA on the
GPU, fresh random inputs incl. odd lengths. Tolerance relative to max |reference|: fp16 2e-3,
bf16 2e-2 (storage rounding of inputs and output; fp32 accumulation). Skipped without a GPU."""
import pytest
import torch

from sdrt import kernels

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("d", [40, 64, 80, 160])  # SD 1.x: 40, 80, 160; SD 2.x and SDXL: 64
@pytest.mark.parametrize("lq,lk", [(4096, 77), (1024, 1024), (65, 33), (1, 1), (300, 154)])
def test_cuda_attention_matches_float64_sdpa(dtype, tol, d, lq, lk):
    g = torch.Generator(device="cuda").manual_seed(lq * 7 + lk + d)
    q, k, v = (torch.randn(2, 5, n, d, device="cuda", generator=g).to(dtype) for n in (lq, lk, lk))
    got = kernels.attention(q, k, v)
    torch.cuda.synchronize()
    want = torch.nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double())
    err = ((got.double() - want).abs().max() / want.abs().max()).item()
    assert got.dtype == dtype and err <= tol, f"relative error {err:.3g}"


def test_cuda_attention_argument_errors():
    q = torch.randn(2, 8, 24, device="cuda", dtype=torch.float16)
    with pytest.raises(ValueError, match="head_dim 24 has no CUDA kernel"):
        kernels.attention(q, q, q)
    with pytest.raises(TypeError, match="float16 or bfloat16"):
        kernels.attention(q.float(), q.float(), q.float())


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 3e-3), (torch.bfloat16, 2e-2)])
def test_cuda_attention_large_logits_scale_and_side_stream(dtype, tol):
    """Large logits exercise the running-max rescale; a non-default stream checks the launch
    follows torch's current stream."""
    g = torch.Generator(device="cuda").manual_seed(5)
    q, k, v = (torch.randn(3, 4, n, 64, device="cuda", generator=g).to(dtype) * 3 for n in (129, 200, 200))
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        got = kernels.attention(q, k, v, scale=0.4)
    stream.synchronize()
    want = torch.nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double(), scale=0.4)
    assert ((got.double() - want).abs().max() / want.abs().max()).item() <= tol
