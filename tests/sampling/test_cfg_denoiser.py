"""CFGDenoiser: A1111's composable-diffusion combine, schedules per call, cond/uncond length mismatch."""
import torch

from sdrt.prompt.conditioning import ImageConditioning, ScheduledCond
from sdrt.sampling.guidance import CFGDenoiser


class FakeInner:
    """denoised = x * (1 + mean of the context row): distinct per context, records its calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, sigma, ctx, image_cond=None):
        self.calls.append(ctx.shape)
        return x * (1 + ctx.mean(dim=(1, 2))).view(-1, 1, 1, 1)


def const(value, length=77, dim=8):
    return ScheduledCond([10], [torch.full((length, dim), float(value))])


def test_and_weights_and_scale(rng):
    x = torch.from_numpy(rng.standard_normal((2, 4, 3, 3)).astype("float32"))
    batch = [ImageConditioning([const(1.0), const(2.0)], [1.0, 0.5], const(0.0)),
             ImageConditioning([const(3.0)], [1.0], const(0.5))]
    inner = FakeInner()
    out = CFGDenoiser(inner, batch, cfg_scale=7.0)(x, torch.ones(2))
    u0, u1 = x[0] * 1.0, x[1] * 1.5
    want0 = u0 + 7.0 * (1.0 * (x[0] * 2.0 - u0) + 0.5 * (x[0] * 3.0 - u0))
    want1 = u1 + 7.0 * (x[1] * 4.0 - u1)
    assert torch.allclose(out[0], want0, atol=1e-5) and torch.allclose(out[1], want1, atol=1e-5)
    assert inner.calls == [torch.Size([5, 77, 8])]  # 3 conds + 2 unconds in one UNet call


def test_different_token_lengths_run_two_calls(rng):
    x = torch.from_numpy(rng.standard_normal((1, 4, 2, 2)).astype("float32"))
    batch = [ImageConditioning([const(1.0, length=154)], [1.0], const(0.0, length=77))]
    inner = FakeInner()
    out = CFGDenoiser(inner, batch, cfg_scale=5.0)(x, torch.ones(1))
    assert inner.calls == [torch.Size([1, 154, 8]), torch.Size([1, 77, 8])]
    assert torch.allclose(out, x + 5.0 * (2 * x - x), atol=1e-5)


def test_schedule_follows_the_call_count():
    sched = ScheduledCond([1, 10], [torch.full((77, 8), 1.0), torch.full((77, 8), 3.0)])
    den = CFGDenoiser(FakeInner(), [ImageConditioning([sched], [1.0], const(0.0))], cfg_scale=1.0)
    x = torch.ones(1, 4, 1, 1)
    seen = [den(x, torch.ones(1)).mean().item() for _ in range(3)]
    assert seen == [2.0, 2.0, 4.0]  # calls 0 and 1 use the first text (step <= 1), then the second


def test_guidance_one_skips_uncond_exactly():
    inner = FakeInner()
    den = CFGDenoiser(inner, [ImageConditioning([const(1.0)], [1.0], const(0.0))], cfg_scale=1.0)
    x = torch.ones(1, 4, 1, 1)
    assert torch.equal(den(x, torch.ones(1)), x * 2.0)
    assert inner.calls == [torch.Size([1, 77, 8])]
