"""The toy world: coloured shapes on plain backgrounds, with captions, masks, edge maps and clips.

Everything is a pure function of its arguments (scene, resolution, seed), so the same call gives
the same pixels on any machine. Shapes are rendered with 4x4 supersampling for anti-aliased edges.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Iterator, Sequence

import numpy as np

# Foreground palette (RGB) and background colours; names are the words used in captions.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 225),
    "yellow": (240, 215, 40),
    "orange": (245, 140, 30),
    "purple": (140, 60, 190),
    "pink": (245, 135, 195),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
}
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")
POSITIONS = ("top left", "top right", "bottom left", "bottom right", "center")
CORNERS = POSITIONS[:4]

# Position -> centre as a fraction of the image side (x, y).
POSITION_CENTRES: dict[str, tuple[float, float]] = {
    "top left": (0.25, 0.25), "top right": (0.75, 0.25),
    "bottom left": (0.25, 0.75), "bottom right": (0.75, 0.75), "center": (0.5, 0.5),
}
# Half extent of a shape in pixels at 64x64 (scaled with the resolution), and the jitter bounds.
HALF_EXTENT = {"small": 7.0, "large": 12.0}
MAX_CENTRE_JITTER = 3.0
MAX_SIZE_JITTER = 1.5
SUPERSAMPLE = 4


@dataclass(frozen=True)
class ShapeSpec:
    shape: str
    colour: str
    size: str
    position: str

    def __post_init__(self) -> None:
        for field, allowed in (("shape", SHAPES), ("colour", PALETTE), ("size", SIZES), ("position", POSITIONS)):
            if getattr(self, field) not in allowed:
                raise ValueError(f"ShapeSpec.{field}={getattr(self, field)!r}; expected one of {list(allowed)}")


@dataclass(frozen=True)
class Scene:
    shapes: tuple[ShapeSpec, ...]
    background: str = "white"
    # Offsets in pixels at 64x64 (scaled with the resolution): per shape (dx, dy, dsize).
    jitter: tuple[tuple[float, float, float], ...] = ()

    def __post_init__(self) -> None:
        if self.background not in BACKGROUNDS:
            raise ValueError(f"Scene.background={self.background!r}; expected one of {list(BACKGROUNDS)}")
        if not 1 <= len(self.shapes) <= 2:
            raise ValueError(f"Scene has {len(self.shapes)} shapes; the toy world has one or two")
        if len({s.position for s in self.shapes}) != len(self.shapes):
            raise ValueError("Scene: two shapes may not share a position")
        if len({s.colour for s in self.shapes}) != len(self.shapes):
            raise ValueError("Scene: two shapes may not share a colour (the scorer tells objects apart by colour)")
        if len(self.shapes) == 2 and any(s.position == "center" for s in self.shapes):
            raise ValueError("Scene: two-shape scenes use corner positions only (a centre shape would overlap)")
        if self.jitter and len(self.jitter) != len(self.shapes):
            raise ValueError("Scene.jitter needs one (dx, dy, dsize) per shape")


def _shape_coverage(spec: ShapeSpec, jitter: tuple[float, float, float], resolution: int) -> np.ndarray:
    """Fraction of each pixel covered by the shape (H, W) in [0, 1], by 4x4 supersampling."""
    scale = resolution / 64.0
    fx, fy = POSITION_CENTRES[spec.position]
    cx = fx * resolution + jitter[0] * scale
    cy = fy * resolution + jitter[1] * scale
    r = (HALF_EXTENT[spec.size] + jitter[2]) * scale
    n = resolution * SUPERSAMPLE
    coords = (np.arange(n, dtype=np.float64) + 0.5) / SUPERSAMPLE
    x, y = coords[None, :], coords[:, None]
    dx, dy = x - cx, y - cy
    if spec.shape == "circle":
        inside = dx * dx + dy * dy <= r * r
    elif spec.shape == "square":
        inside = (np.abs(dx) <= r) & (np.abs(dy) <= r)
    else:  # triangle, apex up, base 2r wide, height 2r
        t = (dy + r) / (2 * r)  # 0 at the apex row, 1 at the base
        inside = (t >= 0) & (t <= 1) & (np.abs(dx) <= t * r)
    inside = inside.astype(np.float32)
    return inside.reshape(resolution, SUPERSAMPLE, resolution, SUPERSAMPLE).mean(axis=(1, 3))


def shape_masks(scene: Scene, resolution: int = 64) -> np.ndarray:
    """Per-shape coverage masks, (n_shapes, H, W) float32 in [0, 1]."""
    jitter = scene.jitter or ((0.0, 0.0, 0.0),) * len(scene.shapes)
    return np.stack([_shape_coverage(s, j, resolution) for s, j in zip(scene.shapes, jitter)])


def render(scene: Scene, resolution: int = 64) -> np.ndarray:
    """The scene as an (H, W, 3) uint8 RGB image."""
    img = np.empty((resolution, resolution, 3), dtype=np.float32)
    img[:] = BACKGROUNDS[scene.background]
    for spec, cover in zip(scene.shapes, shape_masks(scene, resolution)):
        c = cover[..., None]
        img = img * (1 - c) + np.asarray(PALETTE[spec.colour], dtype=np.float32) * c
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def mask(scene: Scene, resolution: int = 64) -> np.ndarray:
    """Union of the shapes as an (H, W) uint8 mask, 255 inside (for inpainting and ControlNet)."""
    return (shape_masks(scene, resolution).max(axis=0) >= 0.5).astype(np.uint8) * 255


def edge_map(image: np.ndarray) -> np.ndarray:
    """(H, W) uint8 edge map, 255 on edges: thresholded gradient magnitude of the luminance and
    colour (a Canny-like control image for ControlNet; exact Canny is not needed here)."""
    f = image.astype(np.float32)
    gx = np.zeros_like(f)
    gy = np.zeros_like(f)
    gx[:, 1:-1] = f[:, 2:] - f[:, :-2]
    gy[1:-1, :] = f[2:, :] - f[:-2, :]
    mag = np.sqrt((gx**2 + gy**2).sum(axis=-1))
    return (mag > 60.0).astype(np.uint8) * 255


# Segmentation classes of the toy world: a "seg" control image paints every pixel in the colour
# of its class (as ADE20K maps do), so it gives each shape's kind and place but not its colour.
SEGMENT_COLOURS: dict[str, tuple[int, int, int]] = {
    "background": (120, 120, 120), "circle": (6, 230, 230), "square": (255, 6, 82), "triangle": (4, 200, 3),
}


def segmentation_map(scene: Scene, resolution: int = 64) -> np.ndarray:
    """The scene's (H, W, 3) uint8 segmentation map: a pixel takes the class of the last shape
    covering at least half of it, else the background's (hard edges, as label maps have)."""
    out = np.empty((resolution, resolution, 3), dtype=np.uint8)
    out[:] = SEGMENT_COLOURS["background"]
    for spec, cover in zip(scene.shapes, shape_masks(scene, resolution)):
        out[cover >= 0.5] = SEGMENT_COLOURS[spec.shape]
    return out


# Caption templates. Each names the attributes it mentions; attributes not named are free.
ONE_SHAPE_TEMPLATES = (
    "a {size} {colour} {shape} in the {position} on a {background} background",
    "{colour} {shape}, {position}, {background} background",
    "{size} {colour} {shape} at the {position}, {background} background",
    "a {colour} {shape} in the {position}",
    "a {size} {colour} {shape} on a {background} background",
    "a {colour} {shape}",
)
TWO_SHAPE_TEMPLATE = "a {size} {colour} {shape} in the {position} and a {size2} {colour2} {shape2} in the {position2} on a {background} background"


def caption(scene: Scene, style: int = 0) -> str:
    """A caption for the scene; `style` picks one of ONE_SHAPE_TEMPLATES for one-shape scenes."""
    a = scene.shapes[0]
    if len(scene.shapes) == 2:
        b = scene.shapes[1]
        return TWO_SHAPE_TEMPLATE.format(size=a.size, colour=a.colour, shape=a.shape, position=a.position,
                                         size2=b.size, colour2=b.colour, shape2=b.shape, position2=b.position,
                                         background=scene.background)
    template = ONE_SHAPE_TEMPLATES[style % len(ONE_SHAPE_TEMPLATES)]
    return template.format(size=a.size, colour=a.colour, shape=a.shape, position=a.position,
                           background=scene.background)


def held_out_combinations() -> frozenset[tuple[str, str, str]]:
    """(colour, shape, position) triples never shown in training, for the acceptance suite.

    Every 6th triple in a fixed order: 18 of 105, chosen so that each colour, shape and position
    still appears in training with the others (checked by the tests).
    """
    triples = list(itertools.product(PALETTE, SHAPES, POSITIONS))
    return frozenset(triples[i] for i in range(2, len(triples), 6))


def _is_held_out(scene: Scene, held_out: frozenset[tuple[str, str, str]]) -> bool:
    return any((s.colour, s.shape, s.position) in held_out for s in scene.shapes)


def random_scene(rng: np.random.Generator, *, two_shape_prob: float = 0.15,
                 exclude: frozenset[tuple[str, str, str]] = frozenset(), jitter: bool = True) -> Scene:
    """A random scene (rejection-sampled to avoid `exclude`d colour/shape/position triples)."""
    while True:
        background = str(rng.choice(list(BACKGROUNDS)))
        n = 2 if rng.random() < two_shape_prob else 1
        positions = rng.choice(CORNERS, size=2, replace=False) if n == 2 else [rng.choice(POSITIONS)]
        colours = rng.choice(list(PALETTE), size=n, replace=False)
        shapes = tuple(ShapeSpec(str(rng.choice(SHAPES)), str(c), str(rng.choice(SIZES)), str(p))
                       for c, p in zip(colours, positions))
        jit = tuple((float(rng.uniform(-MAX_CENTRE_JITTER, MAX_CENTRE_JITTER)),
                     float(rng.uniform(-MAX_CENTRE_JITTER, MAX_CENTRE_JITTER)),
                     float(rng.uniform(-MAX_SIZE_JITTER, MAX_SIZE_JITTER))) for _ in shapes) if jitter else ()
        scene = Scene(shapes, background, jit)
        if not _is_held_out(scene, exclude):
            return scene


def training_samples(seed: int | Sequence[int], resolution: int = 64, *, two_shape_prob: float = 0.15
                     ) -> Iterator[tuple[np.ndarray, str, Scene]]:
    """An endless, reproducible stream of (image, caption, scene) for training, held-out triples excluded."""
    rng = np.random.default_rng(seed)
    held_out = held_out_combinations()
    while True:
        scene = random_scene(rng, two_shape_prob=two_shape_prob, exclude=held_out)
        yield render(scene, resolution), caption(scene, int(rng.integers(len(ONE_SHAPE_TEMPLATES)))), scene


def render_pool(seed: int, n: int, resolution: int = 64, *, workers: int = 1, chunk: int = 1000
                ) -> tuple[np.ndarray, list[str]]:
    """`n` training images (uint8, (n, H, W, 3)) and captions, rendered in chunks of `chunk`.

    Chunk i is the stream ``training_samples((seed, i))``, so the pool is the same for any number of
    `workers` (processes; rendering is pure NumPy and single-threaded).
    """
    jobs = [((seed, i), min(chunk, n - i * chunk), resolution) for i in range((n + chunk - 1) // chunk)]
    if workers > 1 and len(jobs) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as ex:
            parts = list(ex.map(_render_chunk, jobs))
    else:
        parts = [_render_chunk(job) for job in jobs]
    images = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, resolution, resolution, 3), np.uint8)
    return images, [c for p in parts for c in p[1]]


def _render_chunk(job: tuple[tuple[int, int], int, int]) -> tuple[np.ndarray, list[str]]:
    seed, count, resolution = job
    stream = training_samples(seed, resolution)
    items = [next(stream) for _ in range(count)]
    return np.stack([img for img, _, _ in items]), [cap for _, cap, _ in items]


def moving_clip(spec: ShapeSpec, background: str = "white", *, frames: int = 8, direction: str = "right",
                distance: float = 24.0, resolution: int = 64) -> np.ndarray:
    """A short clip (frames, H, W, 3) of one shape moving in a straight line from its position
    (for the motion module). `distance` is the total travel in pixels at 64x64."""
    steps = {"right": (1, 0), "left": (-1, 0), "down": (0, 1), "up": (0, -1)}
    if direction not in steps:
        raise ValueError(f"moving_clip: direction={direction!r}; expected one of {list(steps)}")
    if frames < 2:
        raise ValueError(f"moving_clip: frames={frames}; at least 2")
    ux, uy = steps[direction]
    out = []
    for i in range(frames):
        d = distance * i / (frames - 1) - distance / 2
        out.append(render(Scene((spec,), background, ((ux * d, uy * d, 0.0),)), resolution))
    return np.stack(out)


def scene_from(spec: ShapeSpec, background: str = "white") -> Scene:
    """A one-shape scene without jitter (the canonical picture of a caption)."""
    return Scene((spec,), background)


def with_jitter(scene: Scene, jitter: Sequence[tuple[float, float, float]]) -> Scene:
    return replace(scene, jitter=tuple(tuple(j) for j in jitter))
