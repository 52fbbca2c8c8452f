"""The toy-world generator: determinism, captions that match the pixels, held-out split, extras."""
import itertools

import numpy as np
import pytest

from sdrt.toy import data


def test_stream_is_deterministic_per_seed():
    a = [next(s) for s in [data.training_samples(3)] for _ in range(20)]
    b = [next(s) for s in [data.training_samples(3)] for _ in range(20)]
    c = [next(s) for s in [data.training_samples(4)] for _ in range(20)]
    assert all(np.array_equal(x[0], y[0]) and x[1] == y[1] for x, y in zip(a, b))
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(a, c))


def test_render_puts_the_colour_where_the_caption_says():
    for colour, shape, size, position in itertools.product(data.PALETTE, data.SHAPES, data.SIZES, data.POSITIONS):
        spec = data.ShapeSpec(shape, colour, size, position)
        img = data.render(data.scene_from(spec, "gray"), 64)
        fx, fy = data.POSITION_CENTRES[position]
        # the shape's centroid row/col region holds the palette colour (triangle: below the apex)
        y, x = int(fy * 64) + 2, int(fx * 64)
        assert tuple(img[y, x]) == data.PALETTE[colour], (spec, tuple(img[y, x]))
        assert tuple(img[0, 0]) == data.BACKGROUNDS["gray"]


def test_resolution_128_scales_the_scene():
    spec = data.ShapeSpec("square", "red", "large", "top right")
    small, big = data.render(data.scene_from(spec), 64), data.render(data.scene_from(spec), 128)
    assert big.shape == (128, 128, 3)
    red = lambda im: (np.abs(im.astype(int) - data.PALETTE["red"]).sum(-1) < 30).mean()  # noqa: E731
    assert red(big) == pytest.approx(red(small), rel=0.05)


def test_captions_name_the_scene():
    spec = data.ShapeSpec("circle", "red", "large", "top left")
    scene = data.scene_from(spec, "white")
    assert data.caption(scene, 0) == "a large red circle in the top left on a white background"
    assert data.caption(scene, 1) == "red circle, top left, white background"
    two = data.Scene((spec, data.ShapeSpec("square", "blue", "small", "bottom right")), "black")
    assert data.caption(two) == ("a large red circle in the top left and a small blue square in the bottom right "
                                 "on a black background")


def test_held_out_split_keeps_every_attribute_in_training():
    held = data.held_out_combinations()
    assert len(held) == 18
    train = set(itertools.product(data.PALETTE, data.SHAPES, data.POSITIONS)) - held
    for i, values in enumerate((data.PALETTE, data.SHAPES, data.POSITIONS)):
        for v in values:
            assert sum(t[i] == v for t in train) >= 8, v
    stream = data.training_samples(0)
    for _ in range(500):
        _, _, scene = next(stream)
        assert all((s.colour, s.shape, s.position) not in held for s in scene.shapes)


def test_mask_edge_map_and_clip():
    spec = data.ShapeSpec("square", "green", "large", "center")
    scene = data.scene_from(spec, "white")
    m = data.mask(scene)
    assert m.dtype == np.uint8 and set(np.unique(m)) == {0, 255}
    assert (m > 0).sum() == pytest.approx(24 * 24, rel=0.1)
    e = data.edge_map(data.render(scene))
    assert e[32, 32] == 0 and e[32, 20] == 255 and e[2, 2] == 0
    clip = data.moving_clip(spec, "black", frames=6, direction="right")
    assert clip.shape == (6, 64, 64, 3)
    xs = [np.nonzero((f != data.BACKGROUNDS["black"]).any(-1))[1].mean() for f in clip]
    assert all(b > a for a, b in zip(xs, xs[1:]))


@pytest.mark.parametrize("make,match", [
    (lambda: data.ShapeSpec("hexagon", "red", "small", "center"), r"ShapeSpec.shape='hexagon'"),
    (lambda: data.ShapeSpec("circle", "red", "small", "middle"), r"ShapeSpec.position='middle'"),
    (lambda: data.Scene((data.ShapeSpec("circle", "red", "small", "center"),), "brown"), r"Scene.background='brown'"),
    (lambda: data.Scene((data.ShapeSpec("circle", "red", "small", "top left"),
                         data.ShapeSpec("square", "red", "small", "top right"))), r"may not share a colour"),
    (lambda: data.moving_clip(data.ShapeSpec("circle", "red", "small", "center"), direction="sideways"), r"direction"),
])
def test_invalid_scenes_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()
