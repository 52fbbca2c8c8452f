import pytest
import torch

import sdrt
from sdrt.models import toy as toy_config


def random_controlnet(unet, seed: int):
    """A toy-shaped ControlNet with every weight random (the zero convolutions too)."""
    controlnet = toy_config.build_controlnet(unet)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in controlnet.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return controlnet.eval()


@pytest.fixture(scope="session")
def toy_pipe():
    return sdrt.load("toy")


@pytest.fixture(scope="session")
def random_controlnets(toy_pipe, tmp_path_factory):
    """Two random toy ControlNets saved as diffusers folders."""
    folders = []
    for seed in (1, 2):
        folder = tmp_path_factory.mktemp(f"controlnet{seed}")
        random_controlnet(toy_pipe.unet, seed).save_pretrained(folder, safe_serialization=True)
        folders.append(str(folder))
    return folders
