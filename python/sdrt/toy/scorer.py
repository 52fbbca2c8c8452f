"""A deterministic, non-ML reader of toy-world images (see `sdrt.toy.data`): which shapes, in which
colours, sizes and positions, on which background. It is the scorer for generated images, so it
works on the generator's clean renders and on what a small diffusion model + VAE produces: soft or
blurred edges, mild colour shifts, a little noise, small stray specks. NumPy only.

Method (all sizes below are at 64x64 and scale with the image side):

1. Background: the per-channel median of a 2 px border ring, named by the nearest BACKGROUNDS colour.
   The *measured* median (not the nominal colour) is used from here on, so a shifted background
   does not leak into the foreground.
2. Pixel labels and coverage: an anti-aliased or blurred edge pixel is a mix ``bg + t * (colour - bg)``.
   Each pixel is projected onto the segment from the measured background to each PALETTE colour
   (backgrounds are not candidates); its label is the colour whose segment passes closest and its
   coverage ``t`` is the position along that segment. Near the background the segments converge, so
   only pixels with ``t >= 0.5`` and at least 30 RGB units from the background are foreground.
   Working along mixing segments (instead of "nearest palette colour") keeps half-covered edge pixels
   with their own shape: half red on white would otherwise be nearest to pink.
3. Objects: 8-connected components of the foreground mask (run-length union-find). Components smaller
   than 1% of the image are noise (the smallest toy shape, a jittered small triangle, is ~1.5%).
   A component normally is one object, so a few off-colour pixels or a rim drifting towards a
   neighbouring colour do not matter; it is split only if two colours each have a *core*
   (``t >= 0.75``) of >= 1% of the image (two touching shapes), each pixel going to the nearer of them.
4. Colour: the segment (bg -> PALETTE colour) nearest to the median of the object's core pixels. The
   core of a small blurred shape is still partly background, and e.g. yellow with 30% black mixed in
   is nearer to orange than to yellow as a point, but lies on the black -> yellow segment.
5. Coverage map: each pixel's position along bg -> the object's *measured* median colour (so a colour
   shift reads as full coverage), normalised by the median over the object's interior, kept within
   3 px of the object (other objects excluded). Pixels more than 60 RGB units off that segment (a
   stray speck of another colour touching the shape, a neighbour's rim) count as uncovered.
   area = sum of coverage (anti-aliasing aware); centroid = coverage-weighted mean.
6. Bounding box: where the column-wise and row-wise maxima of the coverage map cross 0.5, interpolated
   to sub-pixel precision. The map is first smoothed with [1, 2, 1] (a max over 20+ noisy pixels is
   biased upwards; smoothing does not move the 0.5 crossing of a straight edge). No percentile
   clipping is needed, which would cut a triangle's apex.
7. Shape: template matching that knows about blur. The edge blur (a Gaussian sigma, anti-aliasing and
   the smoothing included) is measured from the 0.3 -> 0.7 rise of the left/right edges along the
   central rows and the bottom edge along the central columns (a straight edge or a circle's
   extreme for all three shapes). The map is sampled (bilinearly) on a 12x12 grid spanning the bbox
   plus 15% on every side and compared, by mean squared difference, with a unit circle, square and
   apex-up triangle blurred by the same sigma and sampled on the same grid *relative to their own
   bbox found the same way*; the nearest wins. So a blur-rounded square corner or a faded triangle
   apex appears in the templates too, and the grid follows the bbox, so size and mild stretching do
   not matter. The grid covers what a fill ratio + corner test would look at (square: all four bbox
   corners covered, triangle: the two bottom ones, circle: none) and the sides and fill as well.
   Blurred templates are cached per 0.005 of sigma / bbox side.
8. Size and position use the bbox corrected for blur erosion by the winning template (how much
   smaller its measured bbox is than the true one), and fill_ratio = area / that bbox's area
   (circle ~0.785, square ~1, triangle ~0.5). Size: the longer side; small shapes span 11-17 px (half
   extent 7 +- 1.5), large ones 21-27 px (12 +- 1.5), so the cut is at 19 px. Position: the
   data.POSITION_CENTRES entry nearest to the *bbox centre*; toy shapes lie within 3 px per axis of
   their position centre, and the nearest Voronoi boundary is 11 px from it. The bbox centre is the
   nominal centre for all three shapes, whereas an apex-up triangle's centroid lies r/3 (up to
   4.5 px) below it.

Measured on the generator (tests/toy/test_scorer.py): 100% on clean renders, jittered, at 64 and
128; 100% with blur sigma 1 px, a colour shift of +-20 and noise sigma 6. read_image takes a few ms
at 64x64.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import data

__all__ = ["ObjectReading", "Reading", "read_image", "check", "compare"]

# Tunables (RGB distances in 0..255 units; lengths at 64x64, scaled with the image side).
BORDER_PX = 2.0                # width of the border ring sampled for the background
FG_MIN_COVERAGE = 0.5          # a pixel is foreground from half coverage up ...
FG_MIN_DISTANCE = 30.0         # ... and at least this far from the background colour
CORE_COVERAGE = 0.75           # pixels at least this covered give the object's colour
OFF_SEGMENT = 60.0             # pixels this far from the bg -> object colour segment are not the object
MIN_AREA_FRACTION = 0.01       # components (and colour groups) below 1% of the image are noise
GROW_PX = 3.0                  # the coverage map reaches this far beyond the object's mask
SIZE_CUT_PX = 19.0             # longer bbox side below this is "small"
TEMPLATE_GRID = 12             # shape templates are TEMPLATE_GRID x TEMPLATE_GRID cells ...
TEMPLATE_MARGIN = 0.15         # ... over the bbox grown by this fraction of its side on every side
MAX_BLUR = 0.25                # template blur is capped at this fraction of the bbox side ...
BLUR_STEP = 0.005              # ... and quantised to this step (templates are cached per step)

_PALETTE_NAMES = tuple(data.PALETTE)
_PALETTE_RGB = np.array([data.PALETTE[n] for n in _PALETTE_NAMES], dtype=np.float32)
_BG_NAMES = tuple(data.BACKGROUNDS)
_BG_RGB = np.array([data.BACKGROUNDS[n] for n in _BG_NAMES], dtype=np.float32)
_POS_NAMES = tuple(data.POSITIONS)
_POS_XY = np.array([data.POSITION_CENTRES[n] for n in _POS_NAMES], dtype=np.float64)


@dataclass(frozen=True)
class ObjectReading:
    colour: str            # nearest PALETTE colour name
    shape: str             # "circle" | "square" | "triangle"
    size: str              # "small" | "large"
    position: str          # one of data.POSITIONS
    area: float            # pixels (at the image's resolution)
    centroid: tuple[float, float]  # (x, y) as fractions of width/height
    fill_ratio: float      # area / bounding-box area (the bbox corrected for blur, see step 8)


@dataclass(frozen=True)
class Reading:
    background: str                      # nearest BACKGROUNDS colour name
    objects: tuple[ObjectReading, ...]   # largest first; empty if nothing found


# ----------------------------------------------------------------------------------------------
# Helpers

def _to_array(image: Any) -> np.ndarray:
    """(H, W, 3) float32 RGB in 0..255 from a uint8 array, a float array or a PIL image."""
    if hasattr(image, "convert") and hasattr(image, "size") and not isinstance(image, np.ndarray):
        image = np.asarray(image.convert("RGB"))
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise ValueError(f"read_image: expected an (H, W, 3) image, got shape {a.shape}")
    a = a[..., :3]
    if np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float32)
        if a.size and float(a.max()) <= 1.0:  # a float image in [0, 1]
            a = a * 255.0
        return a
    return a.astype(np.float32)


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation by a (2r+1)^2 square (separable)."""
    if r <= 0:
        return mask.copy()
    H, W = mask.shape
    p = np.pad(mask, r)
    rows = np.zeros((H + 2 * r, W), dtype=bool)
    for d in range(2 * r + 1):
        rows |= p[:, d:d + W]
    out = np.zeros((H, W), dtype=bool)
    for d in range(2 * r + 1):
        out |= rows[d:d + H, :]
    return out


def _erode(mask: np.ndarray, r: int) -> np.ndarray:
    return ~_dilate(~mask, r)


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components: (labels (H, W) int32 with -1 for background, count).

    Run-length union-find: the Python loop is over horizontal runs (a few hundred), not pixels.
    """
    H, W = mask.shape
    padded = np.zeros((H, W + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    d = np.diff(padded, axis=1)
    ys, xs = np.nonzero(d)          # row-major: a start (+1) and its end (-1) alternate in each row
    vals = d[ys, xs]
    run_y = ys[vals == 1]
    run_x0 = xs[vals == 1]
    run_x1 = xs[vals == -1]         # exclusive
    n = len(run_y)
    labels = np.full((H, W), -1, dtype=np.int32)
    if n == 0:
        return labels, 0
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    ry, rx0, rx1 = run_y.tolist(), run_x0.tolist(), run_x1.tolist()
    prev_lo = prev_hi = 0           # runs of the previous row are [prev_lo, prev_hi)
    i = 0
    while i < n:
        y = ry[i]
        j = i
        while j < n and ry[j] == y:
            j += 1
        if not (prev_hi > prev_lo and ry[prev_lo] == y - 1):
            prev_lo = prev_hi = i   # previous row empty: nothing to connect to
        for a in range(i, j):
            for b in range(prev_lo, prev_hi):
                # 8-connectivity: runs touch if they overlap after growing one of them by 1 px
                if rx0[b] <= rx1[a] and rx0[a] <= rx1[b]:
                    ra, rb = find(a), find(b)
                    if ra != rb:
                        parent[max(ra, rb)] = min(ra, rb)
        prev_lo, prev_hi = i, j
        i = j
    roots = np.array([find(k) for k in range(n)])
    _, comp = np.unique(roots, return_inverse=True)
    lengths = run_x1 - run_x0
    flat = np.repeat(run_y * W + run_x0 - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
    labels.reshape(-1)[flat] = np.repeat(comp, lengths)
    return labels, int(comp.max()) + 1


def _smooth121(a: np.ndarray) -> np.ndarray:
    """Separable [1, 2, 1] / 4 smoothing, zero outside."""
    p = np.pad(a, 1)
    r = (p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]) / 4
    return (r[:-2] + 2 * r[1:-1] + r[2:]) / 4


def _crossings(profile: np.ndarray) -> tuple[float, float] | None:
    """Sub-pixel positions where a coverage profile (pixel i centred at i + 0.5) first rises to and
    last falls from 0.5; None if it never reaches 0.5."""
    idx = np.flatnonzero(profile >= 0.5)
    if idx.size == 0:
        return None
    i0, i1 = int(idx[0]), int(idx[-1])
    n = profile.size
    if i0 == 0:
        lo = 0.0
    else:
        a, b = float(profile[i0 - 1]), float(profile[i0])
        lo = i0 - 0.5 + (0.5 - a) / max(b - a, 1e-6)
    if i1 == n - 1:
        hi = float(n)
    else:
        a, b = float(profile[i1]), float(profile[i1 + 1])
        hi = i1 + 0.5 + (a - 0.5) / max(a - b, 1e-6)
    return lo, hi


def _bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample img (H, W) at continuous coordinates (pixel i covers [i, i+1]); zero outside."""
    H, W = img.shape
    p = np.pad(img, 1)                # zero border, so samples off the image fade to 0
    fx = x - 0.5 + 1.0
    fy = y - 0.5 + 1.0
    fx = np.clip(fx, 0.0, W + 1 - 1e-6)
    fy = np.clip(fy, 0.0, H + 1 - 1e-6)
    x0 = np.floor(fx).astype(np.intp)
    y0 = np.floor(fy).astype(np.intp)
    x1 = np.minimum(x0 + 1, W + 1)
    y1 = np.minimum(y0 + 1, H + 1)
    wx = fx - x0
    wy = fy - y0
    return ((1 - wy) * ((1 - wx) * p[y0, x0] + wx * p[y0, x1])
            + wy * ((1 - wx) * p[y1, x0] + wx * p[y1, x1]))


def _grid_coords() -> np.ndarray:
    """Sample points of the shape grid in bbox-normalised units (0..1 is the bbox)."""
    step = (1 + 2 * TEMPLATE_MARGIN) / TEMPLATE_GRID
    return -TEMPLATE_MARGIN + (np.arange(TEMPLATE_GRID) + 0.5) * step


# Unit shapes (bbox = [0, 1]^2) on a fine grid over [-0.5, 1.5]^2, 4x4 supersampled.
_FINE_N = 96
_FINE_LO, _FINE_HI = -0.5, 1.5
_FINE_STEP = (_FINE_HI - _FINE_LO) / _FINE_N
_FINE_U = _FINE_LO + (np.arange(_FINE_N) + 0.5) * _FINE_STEP


def _make_fine_shapes() -> dict[str, np.ndarray]:
    ss = 4
    u = _FINE_LO + (np.arange(_FINE_N * ss) + 0.5) * _FINE_STEP / ss
    x, y = u[None, :], u[:, None]
    dx, dy = x - 0.5, y - 0.5
    inside = {
        "circle": dx * dx + dy * dy <= 0.25,
        "square": (np.abs(dx) <= 0.5) & (np.abs(dy) <= 0.5),
        "triangle": (y >= 0) & (y <= 1) & (np.abs(dx) <= y / 2),
    }
    n = _FINE_N
    return {k: v.astype(np.float64).reshape(n, ss, n, ss).mean(axis=(1, 3)) for k, v in inside.items()}


_FINE_SHAPES = _make_fine_shapes()
_GRID = _grid_coords()


def _blur_matrix(sigma: float) -> np.ndarray:
    """(n, n) matrix applying a Gaussian of `sigma` (bbox units) along one axis of the fine grid,
    zero outside the grid (which is background there)."""
    if sigma < 0.25 * _FINE_STEP:
        return np.eye(_FINE_N)
    d = _FINE_U[:, None] - _FINE_U[None, :]
    g = np.exp(-0.5 * (d / sigma) ** 2)
    return g / (sigma * np.sqrt(2 * np.pi) / _FINE_STEP)


def _templates(sigma: float) -> dict[str, tuple[np.ndarray, tuple[float, float, float, float]]]:
    """The unit shapes blurred by `sigma` (bbox units), sampled on the shape grid *relative to their
    own measured bbox* (found the same way as the image's), so a blur-eroded triangle apex or a
    rounded square corner shows up in template and image alike. Cached per BLUR_STEP."""
    level = int(round(min(max(sigma, 0.0), MAX_BLUR) / BLUR_STEP))
    return _templates_at(level)


@functools.lru_cache(maxsize=None)
def _templates_at(level: int) -> dict[str, tuple[np.ndarray, tuple[float, float, float, float]]]:
    g = _blur_matrix(level * BLUR_STEP)
    out = {}
    for name, fine in _FINE_SHAPES.items():
        t = g @ fine @ g.T
        xr, yr = _crossings(t.max(axis=0)), _crossings(t.max(axis=1))
        u0, u1 = (_FINE_LO + xr[0] * _FINE_STEP, _FINE_LO + xr[1] * _FINE_STEP) if xr else (0.0, 1.0)
        v0, v1 = (_FINE_LO + yr[0] * _FINE_STEP, _FINE_LO + yr[1] * _FINE_STEP) if yr else (0.0, 1.0)
        # fine-grid sample coordinates (pixel i covers [i, i+1]) of the shape-grid points
        fx = ((u0 + _GRID * (u1 - u0)) - _FINE_LO) / _FINE_STEP
        fy = ((v0 + _GRID * (v1 - v0)) - _FINE_LO) / _FINE_STEP
        samples = _bilinear(t, np.broadcast_to(fx[None, :], (TEMPLATE_GRID,) * 2),
                            np.broadcast_to(fy[:, None], (TEMPLATE_GRID,) * 2))
        out[name] = (samples, (u0, u1, v0, v1))
    return out


def _rise(p: np.ndarray) -> float | None:
    """Distance over which a profile ordered from outside to inside rises from 0.3 to 0.7
    (linear interpolation between samples); None if the edge is cut off."""
    hi = np.flatnonzero(p >= 0.7)
    if hi.size == 0 or hi[0] == 0:
        return None
    k = int(hi[0])
    lo = np.flatnonzero(p[:k] < 0.3)
    if lo.size == 0:
        return None
    j = int(lo[-1])
    x07 = k - 1 + (0.7 - p[k - 1]) / max(p[k] - p[k - 1], 1e-6)
    x03 = j + (0.3 - p[j]) / max(p[j + 1] - p[j], 1e-6)
    return float(x07 - x03)


def _edge_sigma(cov: np.ndarray, x0: float, x1: float, y0: float, y1: float) -> float:
    """Edge blur (Gaussian sigma, pixels, anti-aliasing included) from the 0.3 -> 0.7 rise of the
    left and right edges along the central rows and of the bottom edge along the central columns
    (the bottom is a straight edge or a circle's extreme for all three shapes; the top is not)."""
    H, W = cov.shape
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    band_x, band_y = 0.2 * (x1 - x0), 0.2 * (y1 - y0)
    rows = [r for r in range(H) if abs(r + 0.5 - cy) <= max(band_y, 0.5)]
    cols = [c for c in range(W) if abs(c + 0.5 - cx) <= max(band_x, 0.5)]
    ic, ir = int(np.clip(cx, 0, W - 1)), int(np.clip(cy, 0, H - 1))
    rises = []
    for r in rows:
        rises.append(_rise(cov[r, :ic + 1]))
        rises.append(_rise(cov[r, ic:][::-1]))
    for c in cols:
        rises.append(_rise(cov[ir:, c][::-1]))
    rises = [d for d in rises if d is not None]
    if not rises:
        return 0.5
    return float(np.median(rises)) / (2 * 0.5244)  # Phi^-1(0.7) = 0.5244


# ----------------------------------------------------------------------------------------------
# Reading

def _nearest(names: tuple[str, ...], table: np.ndarray, rgb: np.ndarray) -> str:
    return names[int(np.argmin(((table - rgb) ** 2).sum(axis=-1)))]


def _segment_projection(diff: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Coverage along bg -> colour: (diff . v) / |v|^2 for diff (..., 3) and v (3,) or (K, 3)."""
    v = np.atleast_2d(direction)
    t = diff @ v.T / np.maximum((v * v).sum(axis=-1), 1e-6)
    return t if direction.ndim == 2 else t[..., 0]


def _segment_residual(diff: np.ndarray, v: np.ndarray, with_t: bool = False):
    """Squared distance of colours `diff` (..., 3), relative to the background, from each segment
    [0, v_k] (v: (K, 3)): (..., K); with with_t, also the clipped positions t along the segments."""
    t = np.clip(_segment_projection(diff, v), 0.0, 1.0)
    resid = ((diff[..., None, :] - t[..., None] * v) ** 2).sum(axis=-1)
    return (resid, t) if with_t else resid


def _read_object(img: np.ndarray, bg: np.ndarray, coverage: np.ndarray, own: np.ndarray,
                 others: np.ndarray) -> ObjectReading:
    H, W = own.shape
    scale = W / 64.0
    # Colour: median of the core pixels (the most covered ones, not the anti-aliased rim).
    diff = img - bg
    core = own & (coverage >= CORE_COVERAGE)
    pix = diff[core] if core.sum() >= 3 else diff[own]
    # Nearest bg -> colour segment to the median core colour: the core of a small blurred shape is
    # still part background, and a 30% mix of black into yellow is nearer orange than yellow.
    med = np.median(pix, axis=0)
    k = int(np.argmin(_segment_residual(med, _PALETTE_RGB - bg)))
    colour = _PALETTE_NAMES[k]

    # Coverage map along bg -> the object's own (measured) colour, around the object only and
    # normalised by its interior. Pixels off that segment (a stray speck of another colour touching
    # the shape, the rim of a neighbouring shape) cover nothing.
    v = med if float(np.sqrt((med ** 2).sum())) >= FG_MIN_DISTANCE else _PALETTE_RGB[k] - bg
    region = _dilate(own, max(1, int(round(GROW_PX * scale)))) & ~others
    t = _segment_projection(diff, v)
    off = ((diff - np.clip(t, 0.0, 1.5)[..., None] * v) ** 2).sum(axis=-1) > OFF_SEGMENT ** 2
    interior = _erode(own, 1)
    ref = float(np.median(t[interior])) if interior.any() else float(np.percentile(t[own], 90))
    ref = min(max(ref, 0.5), 1.5)
    cov = np.where(region & ~off, np.clip(t / ref, 0.0, 1.0), 0.0)

    area = float(cov.sum())
    ys, xs = np.mgrid[0:H, 0:W]
    cx_c = float((cov * (xs + 0.5)).sum() / max(area, 1e-6)) / W
    cy_c = float((cov * (ys + 0.5)).sum() / max(area, 1e-6)) / H

    # Geometry is read from a [1, 2, 1]-smoothed map: the column/row maxima of a noisy map are biased
    # upwards (a max over 20+ noisy pixels), which would push the 0.5 crossings outwards; smoothing
    # does not move the 0.5 crossing of a straight edge, and the blur it adds is measured with the
    # rest by _edge_sigma, so the templates get it too.
    cov_s = _smooth121(cov)
    xr = _crossings(cov_s.max(axis=0))
    yr = _crossings(cov_s.max(axis=1))
    if xr is None or yr is None:  # cannot happen for a mask of t >= 0.5 pixels, but be safe
        oy, ox = np.nonzero(own)
        xr = (float(ox.min()), float(ox.max()) + 1.0)
        yr = (float(oy.min()), float(oy.max()) + 1.0)
    (x0, x1), (y0, y1) = xr, yr
    w, h = max(x1 - x0, 1e-3), max(y1 - y0, 1e-3)

    # Shape: the sampled map against the blurred templates; the nearest wins.
    gx = x0 + _GRID[None, :] * w
    gy = y0 + _GRID[:, None] * h
    samples = _bilinear(cov_s, np.broadcast_to(gx, (TEMPLATE_GRID, TEMPLATE_GRID)),
                        np.broadcast_to(gy, (TEMPLATE_GRID, TEMPLATE_GRID)))
    sigma = _edge_sigma(cov_s, x0, x1, y0, y1)
    templates = _templates(sigma / float(np.sqrt(w * h)))
    errors = {name: float(((samples - tpl) ** 2).mean()) for name, (tpl, _) in templates.items()}
    shape = min(errors, key=errors.__getitem__)

    # The measured bbox of a blurred shape is smaller than the shape (a triangle's apex and base
    # corners fade below 0.5); the winning template says by how much, so undo it.
    u0, u1, v0, v1 = templates[shape][1]
    w, h = w / (u1 - u0), h / (v1 - v0)
    x0, y0 = x0 - u0 * w, y0 - v0 * h
    x1, y1 = x0 + w, y0 + h
    fill = area / (w * h)

    size = "small" if max(w, h) / scale < SIZE_CUT_PX else "large"
    centre = np.array([(x0 + x1) / 2 / W, (y0 + y1) / 2 / H])
    position = _POS_NAMES[int(np.argmin(((_POS_XY - centre) ** 2).sum(axis=-1)))]

    return ObjectReading(colour=colour, shape=shape, size=size, position=position, area=area,
                         centroid=(cx_c, cy_c), fill_ratio=float(fill))


def read_image(image: Any) -> Reading:
    """Read background and objects from an (H, W, 3) uint8 array or a PIL image (any size)."""
    img = _to_array(image)
    H, W = img.shape[:2]
    scale = W / 64.0

    b = max(1, int(round(BORDER_PX * scale)))
    border = np.concatenate([img[:b].reshape(-1, 3), img[-b:].reshape(-1, 3),
                             img[b:-b, :b].reshape(-1, 3), img[b:-b, -b:].reshape(-1, 3)])
    bg = np.median(border, axis=0)
    background = _nearest(_BG_NAMES, _BG_RGB, bg)

    diff = img - bg
    v = _PALETTE_RGB - bg                                    # (K, 3) segment directions
    resid, t = _segment_residual(diff, v, with_t=True)       # (H, W, K) each
    label = np.argmin(resid, axis=-1)
    coverage = np.take_along_axis(t, label[..., None], axis=-1)[..., 0]
    fg = (coverage >= FG_MIN_COVERAGE) & ((diff ** 2).sum(axis=-1) >= FG_MIN_DISTANCE ** 2)

    comp, n = _components(fg)
    min_area = MIN_AREA_FRACTION * H * W
    masks: list[np.ndarray] = []
    if n:
        sizes = np.bincount(comp[comp >= 0], minlength=n)
        for c in np.flatnonzero(sizes >= min_area):
            m = comp == c
            # Colour groups with a core (t >= CORE_COVERAGE) of their own: a blurred rim that drifts
            # towards a neighbouring palette colour has none, two touching shapes have one each.
            counts = np.bincount(label[m & (coverage >= CORE_COVERAGE)], minlength=len(_PALETTE_NAMES))
            major = np.flatnonzero(counts >= min_area)
            if len(major) <= 1:
                masks.append(m)
            else:  # touching shapes of different colours: each pixel goes to the closest of them
                own = major[np.argmin(resid[..., major], axis=-1)]
                masks.extend(m & (own == k) for k in major)
    if not masks:
        return Reading(background=background, objects=())
    union = np.zeros((H, W), dtype=bool)
    for m in masks:
        union |= m
    objects = [_read_object(img, bg, coverage, m, union & ~m) for m in masks]
    objects.sort(key=lambda o: -o.area)
    return Reading(background=background, objects=tuple(objects))


def _match(reading: Reading, colour: str) -> ObjectReading | None:
    for obj in reading.objects:
        if obj.colour == colour:
            return obj
    return reading.objects[0] if reading.objects else None


def compare(reading: Reading, spec: data.ShapeSpec, background: str | None = None) -> dict[str, bool]:
    """`check` on an existing Reading (read once, compare against several specs)."""
    obj = _match(reading, spec.colour)
    out = {
        "colour": obj is not None and obj.colour == spec.colour,
        "shape": obj is not None and obj.shape == spec.shape,
        "size": obj is not None and obj.size == spec.size,
        "position": obj is not None and obj.position == spec.position,
    }
    if background is not None:
        out["background"] = reading.background == background
    return out


def check(image: Any, spec: data.ShapeSpec, background: str | None = None) -> dict[str, bool]:
    """Does the image show `spec` (and the `background`, if given)?

    Compares the object whose colour is spec.colour if there is one, else the largest object (then
    "colour" is False); with no object at all, every shape attribute is False. "background" is read
    independently of the objects.
    """
    return compare(read_image(image), spec, background)
