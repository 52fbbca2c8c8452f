"""Running an upscaler over a large image in tiles: ``upscale_tiled(model, pixels, tile=192,
overlap=8)`` (A1111's ESRGAN_tile / ESRGAN_tile_overlap; tile 0 means untiled).

Why tiles: an RRDBNet's activations at 4x are ~100x the image's size, so large images do not fit
at once. Why not plain tiles: a convolution near a tile edge sees zero padding instead of the
neighbouring pixels, which leaves visible seams. Here the tiles are spread evenly so that
neighbours share at least ``overlap`` input pixels (the extra context each gets), and across each
shared band the two outputs are cross-faded with linear weights: 0 on the quarter of the band at
a tile's own edge (those pixels saw the most padding), a ramp across the middle half, summing to
1. A pixel covered by one tile only is that tile's output unchanged, so away from the bands the
result is the untiled result as far as the network's receptive field stays inside the tile. Tile
starts are multiples of the model's
``size_multiple`` so that pixel-unshuffling nets (Real-ESRGAN x2) group the same pixels as
untiled.

Precision: ``dtype`` (e.g. torch.bfloat16 on CPU, float16 on CUDA) runs the tiles in that
precision through a cached cast copy of the model; the result is always float32, clamped to [0, 1].
"""
from __future__ import annotations

import weakref
from collections.abc import Callable

import torch

__all__ = ["upscale_tiled", "tile_spans", "blend_weights"]

_CAST_CACHE: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()


def tile_spans(length: int, tile: int, overlap: int, multiple: int = 1) -> list[tuple[int, int]]:
    """[start, end) spans covering ``range(length)``: as few tiles of ``tile`` pixels (rounded
    down to ``multiple``) as keep at least ``overlap`` pixels between neighbours, spread evenly,
    every start a multiple of ``multiple``; the last tile ends at the image edge (so it may be up
    to multiple-1 pixels longer)."""
    if tile <= 0 or length <= tile:
        return [(0, length)]
    size = max(multiple, tile // multiple * multiple)
    stride = max(multiple, (size - overlap) // multiple * multiple)
    count = -(-(length - size) // stride) + 1
    starts = sorted({i * (length - size) // (count - 1) // multiple * multiple for i in range(count)})
    return [(s, s + size) for s in starts[:-1]] + [(starts[-1], length)]


def blend_weights(spans: list[tuple[int, int]], index: int, scale: int) -> torch.Tensor:
    """Output-pixel weights (float32, scale * tile length) of tile `index` along one axis: 1 where
    no neighbour overlaps it; across a band shared with a neighbour, 0 on the quarter of the band
    at this tile's edge, a linear ramp over the middle half, 1 on the far quarter. The neighbour's
    weights mirror these, so the two sum to 1 across the band."""
    start, end = spans[index]
    d = torch.arange((end - start) * scale, dtype=torch.float32) + 0.5  # pixel centres from the start
    w = torch.ones_like(d)
    if index > 0:
        w = torch.minimum(w, _ramp(d, spans[index - 1][1] - start, scale))
    if index + 1 < len(spans):
        w = torch.minimum(w, _ramp(d, end - spans[index + 1][0], scale).flip(0))
    return w


def _ramp(d: torch.Tensor, band: int, scale: int) -> torch.Tensor:
    """0 for the first quarter of a ``band``-pixel overlap, rising linearly to 1 over its middle."""
    if band <= 0:
        return torch.ones_like(d)
    trim = band // 4 * scale
    width = band * scale - 2 * trim
    return ((d - trim) / width).clamp(0, 1)


def upscale_tiled(model, pixels: torch.Tensor, *, tile: int = 192, overlap: int = 8,
                  dtype: torch.dtype | None = None,
                  callback: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Upscale (N, C, H, W) float pixels in [0, 1] with `model` (see load_upscaler_file), in tiles
    of at most about ``tile`` input pixels a side sharing ``overlap`` pixels (``tile=0``: one
    pass). ``callback(done, total)`` runs after each tile (raise from it to interrupt). Returns
    float32 (N, C, scale*H, scale*W) in [0, 1] on the device of `pixels`."""
    _check_arguments(pixels, tile, overlap)
    multiple = int(getattr(model, "size_multiple", 1))
    fixed = getattr(model, "fixed_size", None)  # ONNX graphs with static input sides
    if fixed:
        tile = min(t for t in (tile, *fixed) if t > 0)
    height, width = pixels.shape[-2:]
    rows, cols = tile_spans(height, tile, overlap, multiple), tile_spans(width, tile, overlap, multiple)
    runner = _runner(model, dtype)
    if len(rows) == len(cols) == 1:
        out = runner(pixels)
        if callback:
            callback(1, 1)
        return out.to(pixels.device).clamp_(0, 1)
    return _blend_tiles(runner, pixels, rows, cols, int(model.scale), callback).clamp_(0, 1)


def _blend_tiles(runner, pixels, rows, cols, scale, callback) -> torch.Tensor:
    height, width = pixels.shape[-2:]
    out = weight_sum = None
    done, total = 0, len(rows) * len(cols)
    for i, (y0, y1) in enumerate(rows):
        wy = blend_weights(rows, i, scale).to(pixels.device)
        for j, (x0, x1) in enumerate(cols):
            piece = runner(pixels[..., y0:y1, x0:x1]).to(pixels.device)
            if out is None:
                out = pixels.new_zeros((pixels.shape[0], piece.shape[1], height * scale, width * scale),
                                       dtype=torch.float32)
                weight_sum = torch.zeros((height * scale, width * scale), device=pixels.device)
            w = wy[:, None] * blend_weights(cols, j, scale).to(pixels.device)[None, :]
            region = (..., slice(y0 * scale, y1 * scale), slice(x0 * scale, x1 * scale))
            out[region] += piece * w
            weight_sum[region[1:]] += w
            done += 1
            if callback:
                callback(done, total)
    return out / weight_sum


def _check_arguments(pixels: torch.Tensor, tile: int, overlap: int) -> None:
    if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4 or not pixels.is_floating_point():
        what = tuple(pixels.shape) if isinstance(pixels, torch.Tensor) else type(pixels).__name__
        raise ValueError(f"upscale_tiled: pixels must be a float (N, C, H, W) tensor in [0, 1], got {what}")
    if tile < 0 or overlap < 0:
        raise ValueError(f"upscale_tiled: tile={tile} and overlap={overlap} must be >= 0")
    if tile and overlap >= tile:
        raise ValueError(f"upscale_tiled: overlap={overlap} must be smaller than tile={tile}")


def _runner(model, dtype: torch.dtype | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function tile -> float32 output: the tile moved to the model's device and dtype (a cast
    copy of the model when `dtype` differs from its weights'), under no_grad."""
    param = next(iter(model.parameters()), None) if isinstance(model, torch.nn.Module) else None
    if param is None:  # ONNX wrapper: runs in its graph's own precision
        return lambda x: _no_grad(model, x.float())
    net = model if dtype is None or dtype == param.dtype else _cast_copy(model, dtype)
    run_dtype = dtype or param.dtype
    return lambda x: _no_grad(net, x.to(param.device, run_dtype)).float()


def _no_grad(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def _cast_copy(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """`model` in `dtype`, cached per model while its weights are unchanged (the cache is keyed by
    the parameters' version counters, which any in-place update bumps)."""
    import copy

    version = tuple((p.data_ptr(), p._version) for p in model.parameters())
    cached = _CAST_CACHE.get(model)
    if cached is not None and cached["version"] == version and dtype in cached["nets"]:
        return cached["nets"][dtype]
    if cached is None or cached["version"] != version:
        cached = _CAST_CACHE[model] = {"version": version, "nets": {}}
    net = copy.deepcopy(model).to(dtype=dtype)
    cached["nets"][dtype] = net
    return net
