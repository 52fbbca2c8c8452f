"""img2img/inpainting image preparation: A1111's resize modes, mask blur, fill, paste-back."""
import numpy as np
import pytest
from PIL import Image

from sdrt.pipelines import images as imgs


def striped(w, h):
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = (255, 0, 0)
    a[:, w // 2:] = (0, 0, 255)
    a[0, :] = (0, 255, 0)  # top row green: resize-and-fill stretches it into the band above
    return Image.fromarray(a)


def test_just_resize_stretches():
    out = imgs.resize_image(0, striped(100, 50), 64, 64)
    assert out.size == (64, 64)
    assert tuple(np.asarray(out)[32, 5]) == pytest.approx((255, 0, 0), abs=3)


def test_crop_and_resize_covers_and_centres():
    out = np.asarray(imgs.resize_image(1, striped(200, 50), 64, 64))
    # a 4:1 image covering a square: only the middle quarter survives, half red, half blue
    assert tuple(out[32, 2]) == pytest.approx((255, 0, 0), abs=3)
    assert tuple(out[32, 61]) == pytest.approx((0, 0, 255), abs=3)


def test_resize_and_fill_letterboxes_with_stretched_edges():
    out = np.asarray(imgs.resize_image(2, striped(128, 32), 64, 64), dtype=int)
    # fitted 64x16 at rows 24-39; the bands above and below stretch its top and bottom edges
    # (PIL resamples a zero-height box at the edge, so they match the edge rows to within the filter)
    assert (out[:24] == out[0]).all() and (out[40:] == out[63]).all()
    assert np.abs(out[5] - out[24]).max() <= 20 and np.abs(out[60] - out[39]).max() <= 20
    assert out[24, 10, 1] > 60  # the green top row leaks into the fitted top row, and so into the band
    assert tuple(out[32, 10]) == pytest.approx((255, 0, 0), abs=40)


def test_bad_resize_mode():
    with pytest.raises(ValueError, match=r"resize_mode=7"):
        imgs.resize_image(7, striped(8, 8), 8, 8)


def test_mask_blur_matches_opencv_kernel_shape():
    m = Image.new("L", (41, 41), 0)
    m.paste(255, (20, 0, 41, 41))
    blurred = np.asarray(imgs.gaussian_blur_mask(m, 4, 4), dtype=float)
    row = blurred[20]
    assert row[0] == 0 and row[-1] == 255
    assert row[19] == pytest.approx(127.5 - (row[20] - 127.5), abs=1.5)  # symmetric about the edge
    assert 0 < row[12] < 10 and 245 < row[28] < 255  # kernel radius int(2.5 * 4 + 0.5) = 10
    vertical = np.asarray(imgs.gaussian_blur_mask(m, 0, 4), dtype=float)
    assert np.array_equal(vertical, np.asarray(m, dtype=float))  # a vertical edge is untouched by a y blur


def test_fill_paints_the_hole_with_surrounding_colour():
    img = Image.new("RGB", (64, 64), (200, 40, 40))
    img.paste((0, 0, 0), (16, 16, 48, 48))
    hole = Image.new("L", (64, 64), 0)
    hole.paste(255, (16, 16, 48, 48))
    filled = np.asarray(imgs.fill_masked(img, hole), dtype=int)
    assert np.abs(filled[32, 32] - (200, 40, 40)).max() < 30


def test_latent_mask_and_paste_back():
    m = Image.new("L", (64, 64), 0)
    m.paste(255, (0, 0, 32, 64))
    keep = imgs.latent_keep_mask(m, 8, 8)
    assert keep.shape == (8, 8) and keep[:, :4].max() == 0 and keep[:, 4:].min() == 1
    a, b = Image.new("RGB", (64, 64), (255, 0, 0)), Image.new("RGB", (64, 64), (0, 0, 255))
    out = np.asarray(imgs.paste_over_original(a, b, m))
    assert tuple(out[10, 10]) == (255, 0, 0) and tuple(out[10, 50]) == (0, 0, 255)
