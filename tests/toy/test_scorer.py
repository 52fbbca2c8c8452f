"""The toy-world scorer (sdrt.toy.scorer) against the generator (sdrt.toy.data): accuracy on clean and
degraded renders, checks that must fail, and a confusion matrix of shapes on the canonical scenes."""
from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest

from sdrt.toy import data, scorer

SEED = 20240611
N_SCENES = 640          # one- and two-shape scenes; every 5th at 128x128
TWO_SHAPE_PROB = 0.35
ATTRS = ("colour", "shape", "size", "position")


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (edge padding) of an (H, W, 3) image; float64 out."""
    r = int(np.ceil(3 * sigma))
    x = np.arange(-r, r + 1)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    f = image.astype(np.float64)
    H, W = f.shape[:2]
    p = np.pad(f, ((r, r), (0, 0), (0, 0)), mode="edge")
    f = sum(k[i] * p[i:i + H] for i in range(2 * r + 1))
    p = np.pad(f, ((0, 0), (r, r), (0, 0)), mode="edge")
    return sum(k[i] * p[:, i:i + W] for i in range(2 * r + 1))


def _degrade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What a small diffusion model + VAE might give: blur (sigma 1 px at 64x64, scaled with the
    resolution), a colour shift of up to +-20 per channel, Gaussian noise of sigma 6."""
    res = image.shape[1]
    f = _gaussian_blur(image, 1.0 * res / 64)
    f = f + rng.uniform(-20, 20, size=3)
    f = f + rng.normal(0.0, 6.0, size=f.shape)
    return np.clip(np.rint(f), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def scenes() -> list[tuple[data.Scene, np.ndarray]]:
    rng = np.random.default_rng(SEED)
    out = []
    for i in range(N_SCENES):
        res = 128 if i % 5 == 0 else 64
        scene = data.random_scene(rng, two_shape_prob=TWO_SHAPE_PROB, jitter=True)
        out.append((scene, data.render(scene, res)))
    return out


def _accuracy(items) -> tuple[dict[str, float], list[str], Counter]:
    """Per-attribute accuracy (%) over every shape of every scene (background: per scene)."""
    right: Counter = Counter()
    total: Counter = Counter()
    kinds: Counter = Counter()
    failures = []
    for scene, image in items:
        reading = scorer.read_image(image)
        total["background"] += 1
        right["background"] += reading.background == scene.background
        if reading.background != scene.background:
            failures.append(f"{scene}: background read as {reading.background}")
        kinds[f"{len(scene.shapes)} shape(s) @ {image.shape[1]}"] += 1
        for spec in scene.shapes:
            result = scorer.compare(reading, spec)
            for attr in ATTRS:
                total[attr] += 1
                right[attr] += result[attr]
            if not all(result.values()):
                failures.append(f"{spec} on {scene.background} @ {image.shape[1]}: {result} <- {reading.objects}")
    return {k: 100.0 * right[k] / total[k] for k in total}, failures, kinds


def _report(name: str, acc: dict[str, float], failures: list[str], kinds: Counter) -> None:
    print(f"\n{name}: " + ", ".join(f"{k} {v:.2f}%" for k, v in acc.items()) + f"  ({dict(kinds)})")
    for line in failures[:10]:
        print("  miss:", line)


def test_clean_accuracy(scenes):
    acc, failures, kinds = _accuracy(scenes)
    _report("clean", acc, failures, kinds)
    assert len(scenes) >= 600 and kinds["2 shape(s) @ 64"] + kinds["2 shape(s) @ 128"] >= 100
    assert acc["background"] == 100.0
    assert acc["colour"] >= 99.0 and acc["position"] >= 99.0
    assert acc["shape"] >= 95.0 and acc["size"] >= 95.0


def test_degraded_accuracy(scenes):
    rng = np.random.default_rng(SEED + 1)
    degraded = [(scene, _degrade(image, rng)) for scene, image in scenes]
    acc, failures, kinds = _accuracy(degraded)
    _report("degraded", acc, failures, kinds)
    assert acc["colour"] >= 97.0 and acc["position"] >= 97.0
    assert acc["shape"] >= 90.0 and acc["size"] >= 90.0
    assert acc["background"] >= 99.0


def _render(shape="circle", colour="red", size="large", position="top left", background="white", res=64):
    spec = data.ShapeSpec(shape, colour, size, position)
    return spec, data.render(data.scene_from(spec, background), res)


def test_checks_that_must_fail():
    spec, image = _render("circle", "red", "large", "top left", "white")
    assert scorer.check(image, spec, "white") == dict.fromkeys([*ATTRS, "background"], True)

    # wrong colour: falls back to the largest object, so only the colour fails
    r = scorer.check(image, data.ShapeSpec("circle", "blue", "large", "top left"))
    assert r == {"colour": False, "shape": True, "size": True, "position": True}
    # wrong shape, size, position, background: each fails alone
    assert scorer.check(image, data.ShapeSpec("square", "red", "large", "top left"))["shape"] is False
    assert scorer.check(image, data.ShapeSpec("triangle", "red", "large", "top left"))["shape"] is False
    assert scorer.check(image, data.ShapeSpec("circle", "red", "small", "top left"))["size"] is False
    assert scorer.check(image, data.ShapeSpec("circle", "red", "large", "bottom right"))["position"] is False
    assert scorer.check(image, data.ShapeSpec("circle", "red", "large", "center"))["position"] is False
    assert scorer.check(image, spec, "black")["background"] is False

    # the same on a degraded image
    noisy = _degrade(image, np.random.default_rng(0))
    assert scorer.check(noisy, data.ShapeSpec("circle", "blue", "large", "top left"))["colour"] is False
    assert scorer.check(noisy, data.ShapeSpec("square", "red", "large", "top left"))["shape"] is False
    assert scorer.check(noisy, data.ShapeSpec("circle", "red", "large", "bottom right"))["position"] is False

    # only background (clean, and with noise and a few stray specks): nothing to find
    blank = np.full((64, 64, 3), data.BACKGROUNDS["white"], dtype=np.uint8)
    rng = np.random.default_rng(1)
    speckled = np.clip(blank + rng.normal(0, 6, blank.shape), 0, 255).astype(np.uint8)
    for y, x in rng.integers(4, 60, size=(4, 2)):
        speckled[y:y + 2, x:x + 2] = data.PALETTE["red"]
    for img in (blank, speckled):
        reading = scorer.read_image(img)
        assert reading.background == "white" and reading.objects == ()
        assert not any(scorer.check(img, spec).values())
        assert not any(scorer.check(img, spec, "black").values())
        assert scorer.check(img, spec, "white") == {**dict.fromkeys(ATTRS, False), "background": True}


def test_two_shapes_are_told_apart_by_colour():
    a = data.ShapeSpec("triangle", "orange", "large", "top left")
    b = data.ShapeSpec("square", "yellow", "large", "top right")  # nearest pair of palette colours
    # jittered towards each other so that they touch
    scene = data.Scene((a, b), "black", ((3.0, 0.0, 1.5), (-3.0, 0.0, 1.5)))
    image = data.render(scene, 64)
    reading = scorer.read_image(image)
    assert [o.colour for o in reading.objects] == ["yellow", "orange"]  # largest first
    assert all(all(scorer.compare(reading, s, "black").values()) for s in (a, b))


def test_input_kinds_and_fields():
    from PIL import Image

    spec, image = _render("square", "green", "small", "center", "gray", res=128)
    reading = scorer.read_image(image)
    assert scorer.read_image(Image.fromarray(image)) == reading
    assert scorer.read_image(image.astype(np.float32) / 255.0) == reading
    (obj,) = reading.objects
    assert (obj.colour, obj.shape, obj.size, obj.position) == ("green", "square", "small", "center")
    assert obj.area == pytest.approx(14.0 * 14.0 * 4, rel=0.03)  # side 14 px at 64 -> 28 px at 128
    assert obj.centroid == pytest.approx((0.5, 0.5), abs=0.01)
    assert obj.fill_ratio == pytest.approx(1.0, abs=0.05)
    for shape, fill in (("circle", np.pi / 4), ("triangle", 0.5)):
        (o,) = scorer.read_image(_render(shape, "blue", "large", "center", "black")[1]).objects
        assert o.fill_ratio == pytest.approx(fill, abs=0.05)


def test_canonical_shape_confusion_matrix():
    """Every shape x size x position x colour x background, without jitter: all read right."""
    confusion = {s: Counter() for s in data.SHAPES}
    wrong = []
    n = 0
    for shape, size, position, colour, background in itertools.product(
            data.SHAPES, data.SIZES, data.POSITIONS, data.PALETTE, data.BACKGROUNDS):
        spec, image = _render(shape, colour, size, position, background)
        reading = scorer.read_image(image)
        objs = reading.objects
        confusion[shape][objs[0].shape if objs else "none"] += 1
        result = scorer.compare(reading, spec, background)
        if not all(result.values()) or len(objs) != 1:
            wrong.append((spec, background, result, objs))
        n += 1
    print("\nshape confusion (rows: truth):")
    for s in data.SHAPES:
        print(f"  {s:9s}", {t: confusion[s][t] for t in (*data.SHAPES, "none")})
    assert n == 630
    for s in data.SHAPES:
        assert confusion[s] == Counter({s: 210}), confusion[s]
    assert not wrong, wrong[:5]
