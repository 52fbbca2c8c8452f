import numpy as np
import pytest
import torch

from sdrt.toy import data


@pytest.fixture(scope="session")
def toy_upscaler():
    """The shipped toy upscaler (2x RRDBNet), loaded as users load any upscaler file."""
    from sdrt.postprocess import load_upscaler_file
    from sdrt.toy.train_upscaler import toy_upscaler_path

    return load_upscaler_file(toy_upscaler_path())


@pytest.fixture(scope="session")
def toy_pixels():
    """toy_pixels(n, resolution, seed) -> (n, 3, resolution, resolution) float pixels of random
    toy scenes (two shapes in most, so edges cross tile borders)."""

    def make(n: int, resolution: int, seed: int) -> torch.Tensor:
        rng = np.random.default_rng(seed)
        images = [data.render(data.random_scene(rng, two_shape_prob=0.7), resolution) for _ in range(n)]
        return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255

    return make
