"""upscale_tiled: tiled output equals the untiled output away from tile borders and stays within 2
levels (of 255) at them; lower precision (bf16) stays close to fp32; argument errors are clear."""
from __future__ import annotations

import pytest
import torch
from published_upscalers import random_weights, realesrgan_rrdbnet, srvgg_compact

from sdrt.postprocess import build_upscaler, detect_layout, upscale_tiled
from sdrt.postprocess.tiling import blend_weights, tile_spans

LEVEL = 1 / 255
# Input pixels from a tile edge beyond which tiled equals untiled (float32 noise, 1e-5): the
# networks' receptive fields are wider, but the influence of a far border decays below that.
FAR = 24


def far_from_tile_edges(length: int, spans, scale: int) -> torch.Tensor:
    """Output pixels (along one axis) farther than FAR input pixels from every inner tile edge."""
    edges = [s for s, _ in spans if s > 0] + [e for _, e in spans if e < length]
    centres = (torch.arange(length * scale) + 0.5) / scale
    far = torch.ones(length * scale, dtype=torch.bool)
    for edge in edges:
        far &= (centres - edge).abs() > FAR
    return far


def check_tiling(model, x, tile, overlap):
    untiled = upscale_tiled(model, x, tile=0)
    tiled = upscale_tiled(model, x, tile=tile, overlap=overlap)
    assert tiled.shape == untiled.shape and tiled.dtype == torch.float32
    diff = (tiled - untiled).abs()
    h, w = x.shape[-2:]
    m, s = model.size_multiple, model.scale
    rows, cols = tile_spans(h, tile, overlap, m), tile_spans(w, tile, overlap, m)
    far = far_from_tile_edges(h, rows, s)[:, None] & far_from_tile_edges(w, cols, s)[None, :]
    assert len(rows) > 1 and len(cols) > 1 and far.any()
    assert diff[..., far].max().item() <= 1e-5, "differs away from tile borders"
    assert diff.max().item() <= 2 * LEVEL, f"seam error {diff.max().item() * 255:.2f} levels"
    return diff


def test_toy_upscaler_tiled_vs_untiled(toy_upscaler, toy_pixels):
    x = toy_pixels(2, 160, seed=3)[..., :, :150]
    check_tiling(toy_upscaler, x, tile=96, overlap=8)


def test_srvgg_random_weights_tiled_vs_untiled(toy_pixels):
    model = build_upscaler(detect_layout(random_weights(srvgg_compact(16, nf=32), seed=9)))
    check_tiling(model, toy_pixels(1, 120, seed=4), tile=64, overlap=8)


def test_pixel_unshuffle_net_tiles_on_its_grid():
    """x2plus-style nets unshuffle 2x2 blocks: tiles start on even pixels, or nothing would match."""
    model = build_upscaler(detect_layout(random_weights(realesrgan_rrdbnet(1, in_ch=12, nf=16, gc=8), seed=3)))
    assert model.size_multiple == 2
    check_tiling(model, torch.rand(1, 3, 131, 122, generator=torch.Generator().manual_seed(0)), tile=81, overlap=7)


def test_blend_weights_sum_to_one():
    for length, tile, overlap, multiple in [(150, 72, 8, 2), (401, 192, 8, 1), (97, 20, 0, 1), (64, 16, 6, 4)]:
        spans = tile_spans(length, tile, overlap, multiple)
        assert spans[0][0] == 0 and spans[-1][1] == length
        assert all(s % multiple == 0 for s, _ in spans)
        assert all(a[1] - b[0] >= overlap for a, b in zip(spans, spans[1:]))
        for scale in (1, 2, 4):
            total = torch.zeros(length * scale)
            for i, (s, e) in enumerate(spans):
                total[s * scale:e * scale] += blend_weights(spans, i, scale)
            assert torch.allclose(total, torch.ones_like(total), atol=1e-6)


def test_bf16_close_to_fp32(toy_upscaler, toy_pixels):
    """bf16 (8 mantissa bits) through the toy net: max 6 levels, mean 0.5 level off fp32."""
    x = toy_pixels(2, 64, seed=5)
    fp32 = upscale_tiled(toy_upscaler, x, tile=0)
    bf16 = upscale_tiled(toy_upscaler, x, tile=0, dtype=torch.bfloat16)
    assert bf16.dtype == torch.float32 and 0 <= bf16.min() and bf16.max() <= 1
    diff = (bf16 - fp32).abs()
    assert diff.max().item() <= 6 * LEVEL and diff.mean().item() <= 0.5 * LEVEL
    assert next(toy_upscaler.parameters()).dtype == torch.float32  # the model itself is untouched


def test_cast_copy_is_cached_and_refreshed():
    from sdrt.postprocess.tiling import _cast_copy

    model = build_upscaler(detect_layout(random_weights(srvgg_compact(1, nf=4))))
    first = _cast_copy(model, torch.bfloat16)
    assert _cast_copy(model, torch.bfloat16) is first
    with torch.no_grad():
        model.body[0].weight.add_(1.0)
    refreshed = _cast_copy(model, torch.bfloat16)
    assert refreshed is not first
    assert torch.equal(refreshed.body[0].weight, model.body[0].weight.bfloat16())


def test_output_clamped_batched_and_callback(toy_upscaler, toy_pixels):
    x = toy_pixels(3, 64, seed=6)
    calls = []
    out = upscale_tiled(toy_upscaler, x, tile=40, overlap=8, callback=lambda d, t: calls.append((d, t)))
    assert out.shape == (3, 3, 128, 128) and out.min() >= 0 and out.max() <= 1
    assert calls == [(i, 4) for i in range(1, 5)]
    with torch.no_grad():
        single = upscale_tiled(toy_upscaler, x[1:2], tile=40, overlap=8)
    assert torch.allclose(out[1:2], single, atol=1e-5)


@pytest.mark.parametrize("kwargs,match", [
    (dict(tile=-1), "must be >= 0"), (dict(tile=32, overlap=32), "smaller than tile"),
])
def test_argument_errors(toy_upscaler, kwargs, match):
    with pytest.raises(ValueError, match=match):
        upscale_tiled(toy_upscaler, torch.rand(1, 3, 8, 8), **kwargs)
    with pytest.raises(ValueError, match="float"):
        upscale_tiled(toy_upscaler, torch.zeros(3, 8, 8, dtype=torch.uint8))
