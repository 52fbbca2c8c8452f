"""The weight-free preprocessors and the extension's resize path, on small images whose results
are worked out by hand (docs/controlnet.md gives the rules)."""
import numpy as np
import pytest

from sdrt.control.image_resize import fit_to_size, hwc3, pixel_perfect_resolution, resize_with_pad
from sdrt.control.preprocessors import find_preprocessor, sorted_preprocessors


def _square(size=64, lo=16, hi=48, fg=0, bg=255):
    img = np.full((size, size, 3), bg, np.uint8)
    img[lo:hi, lo:hi] = fg
    return img


def test_hwc3():
    grey = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert (hwc3(grey) == grey[..., None]).all() and hwc3(grey).shape == (2, 3, 3)
    rgba = np.zeros((1, 2, 4), np.uint8)
    rgba[0, 0] = (0, 0, 0, 255)   # opaque black stays black
    rgba[0, 1] = (0, 0, 0, 0)     # fully transparent becomes white
    assert hwc3(rgba).tolist() == [[[0, 0, 0], [255, 255, 255]]]


def test_resize_with_pad_scales_the_short_side_and_pads_to_64():
    img = np.zeros((60, 100, 3), np.uint8)
    padded, unpad = resize_with_pad(img, 64)
    # k = 64 / 60: 60 -> 64, 100 -> round(106.67) = 107; padded to 64 x 128
    assert padded.shape == (64, 128, 3) and unpad(padded).shape == (64, 107, 3)


def test_pixel_perfect_resolution():
    # a 300x200 (w x h) image onto 512x512: ratios 512/200 and 512/300; crop takes the larger
    assert pixel_perfect_resolution((200, 300), (512, 512), "Crop and Resize") == round(512 / 200 * 200)
    assert pixel_perfect_resolution((200, 300), (512, 512), "Resize and Fill") == round(512 / 300 * 200)  # 341


def test_fit_to_size_modes():
    img = np.zeros((2, 4, 3), np.uint8)
    img[:, 1:3] = 200  # a bright middle, dark left and right columns
    crop = fit_to_size(img, 2, 2, "Crop and Resize")   # cover (k = 1) then the centre 2x2
    assert crop.shape == (2, 2, 3) and (crop == 200).all()
    stretched = fit_to_size(img, 8, 4, "Just Resize")
    assert stretched.shape == (4, 8, 3)
    fill = fit_to_size(img, 4, 4, "Resize and Fill")   # fits as 4x2, centred in 4x4 rows 1..2
    assert fill.shape == (4, 4, 3) and (fill[1:3] == img).all()
    border_median = np.median(np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]]), axis=0)
    assert (fill[0] == border_median).all() and (fill[3] == border_median).all()


def test_label_maps_resize_with_nearest():
    labels = np.zeros((4, 4, 3), np.uint8)
    labels[:2, :2], labels[:2, 2:], labels[2:, :2] = (6, 230, 230), (255, 6, 82), (4, 200, 3)
    big = fit_to_size(labels, 8, 8, "Just Resize")
    assert {tuple(c) for c in big.reshape(-1, 3)} == {tuple(c) for c in labels.reshape(-1, 3)}


def test_canny_marks_the_square_outline():
    run = find_preprocessor("canny").run
    edges = run(_square(), 64, 100, 200)
    assert edges.shape == (64, 64, 3) and set(np.unique(edges)) == {0, 255}
    on = np.argwhere(edges[..., 0] == 255)
    # every edge pixel sits on the square's boundary (the last row/column outside or the first inside)
    assert len(on) > 4 * 28
    assert all(min(abs(y - 16), abs(y - 47), abs(x - 16), abs(x - 47)) <= 1 for y, x in on)
    assert (edges[:14] == 0).all() and (edges[24:40, 24:40] == 0).all()


def test_threshold_invert_tile():
    img = _square(fg=100, bg=200)
    out = find_preprocessor("threshold").run(img, 64, 150, -1)
    assert (out[20, 20] == 0).all() and (out[2, 2] == 255).all()
    assert (find_preprocessor("invert").run(img, 64, 0, 0) == 255 - img).all()
    assert find_preprocessor("tile_resample").run(img, 64, 2.0, 0).shape == (32, 32, 3)
    assert find_preprocessor("tile_resample").run(img, 64, 1.05, 0) is not None


def test_lineart_standard_turns_dark_lines_white():
    img = np.full((64, 64, 3), 255, np.uint8)
    img[30:33, 8:56] = 0
    out = find_preprocessor("lineart_standard").run(img, 64, 0, 0)
    # the response is normalised by its median over clear responses, times 127: about 127 on the line
    assert 100 <= out[31, 32, 0] <= 160 and out[5, 5, 0] == 0


def test_scribble_xdog_and_blur_and_shuffle():
    img = _square()
    xdog = find_preprocessor("scribble_xdog").run(img, 64, 32, 0)
    assert set(np.unique(xdog)) <= {0, 255} and xdog[16, 32, 0] == 255 and xdog[2, 2, 0] == 0
    blurred = find_preprocessor("blur_gaussian").run(img, 64, 2.0, 0)
    assert 0 < blurred[16, 32, 0] < 255
    a = find_preprocessor("shuffle").run(img, 64, 0, 0, np.random.RandomState(3))
    b = find_preprocessor("shuffle").run(img, 64, 0, 0, np.random.RandomState(3))
    assert (a == b).all() and a.shape == img.shape


def test_sliders_defaults_and_bound_check():
    canny = find_preprocessor("canny")
    assert canny.settings(-1, -1, -1) == (512, 100, 200)
    assert canny.settings(256, 50, 999) == (256, 50, 200)


def test_module_order_and_labels():
    order = [p.name for p in sorted_preprocessors()]
    assert order[0] == "none" and order.index("canny") < order.index("invert") < order.index("threshold")
    assert find_preprocessor("inpaint_global_harmonious").name == "inpaint"
    with pytest.raises(KeyError):
        find_preprocessor("nope")


def test_black_and_white_maps_stay_black_and_white_when_resized():
    edges = find_preprocessor("canny").run(_square(), 64, 100, 200)
    for mode, size in (("Crop and Resize", (96, 96)), ("Just Resize", (40, 56))):
        out = fit_to_size(edges, *size, mode)
        assert set(np.unique(out)) <= {0, 255} and out.max() == 255


def test_hidden_resolution_sliders():
    assert [s.name for s in find_preprocessor("invert").sliders()] == []
    assert find_preprocessor("shuffle").settings(768, -1, -1)[0] == 512   # shuffle always 512
    assert [s.name for s in find_preprocessor("canny").sliders()] == ["Resolution", "Low Threshold", "High Threshold"]
