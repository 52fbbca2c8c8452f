"""txt2img, img2img and inpainting give the same bytes as the pipeline before it became stages
(images recorded from commit 136250c by golden_cases.py --record, torch on one thread)."""
import json
import os

import numpy as np
import pytest
from PIL import Image

import sdrt
from golden_cases import GOLDEN_DIR, cases, digest, run_case

with open(os.path.join(GOLDEN_DIR, "expected.json")) as f:
    EXPECTED = json.load(f)


@pytest.mark.parametrize("name", sorted(cases()))
def test_same_bytes_as_before_the_stages(name):
    load_options, method, args = cases()[name]
    result = run_case(sdrt.load("toy", **load_options), method, args)
    expected = EXPECTED[name]
    assert result.seeds == expected["seeds"]
    assert result.infotexts == expected["infotexts"]
    for i, image in enumerate(result.images):
        recorded = np.asarray(Image.open(os.path.join(GOLDEN_DIR, f"{name}-{i}.png")).convert("RGB"))
        got = np.asarray(image.convert("RGB"))
        assert digest(image) == expected["sha256"][i], (
            f"image {i}: max abs diff {np.abs(got.astype(int) - recorded.astype(int)).max()}")
    assert len(result.images) == len(expected["sha256"])
