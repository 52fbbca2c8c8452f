"""lineart_realistic / lineart_coarse: the informative-drawings Generator (Chan et al.) with 3
residual blocks, weights sk_model.pth / sk_model2.pth in the annotator subfolder "lineart".

Flow (the extension's `lineart`, `lineart_coarse`): pad-resize, RGB / 255, the sigmoid output
x255 clipped to uint8 (dark lines on white), inverted (255 - result), unpad."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..image_resize import hwc3, resize_with_pad
from . import _annotator_net as common
from .base import Preprocessor

SUBFOLDER, REALISTIC, COARSE = "lineart", "sk_model.pth", "sk_model2.pth"


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels), nn.ReLU(),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class Generator(nn.Module):
    """7x7 stem (64), two stride-2 downs (128, 256), residual blocks, two transposed-conv ups,
    7x7 head to `cout` channels and a sigmoid; instance norms without affine parameters.
    Keys: model0.1, model1.{0,3}, model2.i.conv_block.{1,5}, model3.{0,3}, model4.1 (.weight/.bias)."""

    def __init__(self, cin: int = 3, cout: int = 1, n_residual: int = 3, sigmoid: bool = True):
        super().__init__()
        self.model0 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(cin, 64, 7), nn.InstanceNorm2d(64), nn.ReLU())
        down = []
        for c in (64, 128):
            down += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.InstanceNorm2d(2 * c), nn.ReLU()]
        self.model1 = nn.Sequential(*down)
        self.model2 = nn.Sequential(*[ResidualBlock(256) for _ in range(n_residual)])
        up = []
        for c in (256, 128):
            up += [nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1),
                   nn.InstanceNorm2d(c // 2), nn.ReLU()]
        self.model3 = nn.Sequential(*up)
        self.model4 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(64, cout, 7),
                                    *([nn.Sigmoid()] if sigmoid else []))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model4(self.model3(self.model2(self.model1(self.model0(x)))))


def lineart_map(net: Generator, image: np.ndarray) -> np.ndarray:
    """(H, W) uint8 line drawing (dark lines on white) of an (H, W, 3) uint8 RGB image."""
    x = common.to_tensor(image, net) / 255.0
    with torch.no_grad():
        line = net(x)
    return common.to_uint8(line[0, 0].float().cpu().numpy())


def _run(filename: str, image: np.ndarray, resolution: int, folders) -> np.ndarray:
    net = common.load_net(folders, SUBFOLDER, filename, Generator)
    padded, unpad = resize_with_pad(image, resolution)
    return hwc3(unpad(255 - lineart_map(net, padded)))


def lineart_realistic(image: np.ndarray, resolution: int, a: float, b: float, rng=None, folders=None) -> np.ndarray:
    return _run(REALISTIC, image, resolution, folders)


def lineart_coarse(image: np.ndarray, resolution: int, a: float, b: float, rng=None, folders=None) -> np.ndarray:
    return _run(COARSE, image, resolution, folders)


PREPROCESSORS = (
    Preprocessor("lineart", "lineart_realistic", lineart_realistic, tags=("Lineart",)),
    Preprocessor("lineart_coarse", "lineart_coarse", lineart_coarse, tags=("Lineart",)),
)
