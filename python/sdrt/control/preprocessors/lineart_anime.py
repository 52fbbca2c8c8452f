"""lineart_anime: Anime2Sketch's pix2pix U-Net generator (8 downsamplings, 64 base filters,
instance norms without affine parameters, no dropout), weights netG.pth in the annotator
subfolder "lineart_anime" (keys possibly prefixed "module.").

Flow (the extension's `lineart_anime`): pad-resize; the net's input is that image resized
(bicubic) up to multiples of 256, scaled to [-1, 1]; its tanh output x127.5 + 127.5 is resized
(bicubic, float) back, clipped to uint8 (dark lines on white) and inverted (255 - result); unpad."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import nn

from ..cv import cv2
from ..image_resize import hwc3, resize_with_pad
from . import _annotator_net as common
from .base import Preprocessor

SUBFOLDER, FILENAME = "lineart_anime", "netG.pth"


class UnetBlock(nn.Module):
    """One U-Net level: down (4x4 stride-2 conv), the inner level, up (4x4 stride-2 transposed
    conv); every level but the outermost returns its input concatenated with its output.
    Sequential indices (for the keys): outermost [down 0, inner 1, relu, up 3, tanh];
    middle [lrelu, down 1, norm, inner 3, relu, up 5, norm]; innermost [lrelu, down 1, relu, up 3, norm]."""

    def __init__(self, outer: int, inner: int, cin: Optional[int] = None, sub: Optional[nn.Module] = None,
                 outermost: bool = False):
        super().__init__()
        self.outermost = outermost
        cin = outer if cin is None else cin
        down = nn.Conv2d(cin, inner, 4, stride=2, padding=1)  # bias: instance norm follows, pix2pix keeps it
        up_in = inner if sub is None else 2 * inner
        up = nn.ConvTranspose2d(up_in, outer, 4, stride=2, padding=1)
        if outermost:
            layers = [down, sub, nn.ReLU(), up, nn.Tanh()]
        elif sub is None:
            layers = [nn.LeakyReLU(0.2), down, nn.ReLU(), up, nn.InstanceNorm2d(outer)]
        else:
            layers = [nn.LeakyReLU(0.2), down, nn.InstanceNorm2d(inner), sub, nn.ReLU(), up, nn.InstanceNorm2d(outer)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        return y if self.outermost else torch.cat([x, y], dim=1)


class UnetGenerator(nn.Module):
    def __init__(self, cin: int = 3, cout: int = 1, num_downs: int = 8, ngf: int = 64):
        super().__init__()
        block = UnetBlock(8 * ngf, 8 * ngf)
        for _ in range(num_downs - 5):
            block = UnetBlock(8 * ngf, 8 * ngf, sub=block)
        for mult in (4, 2, 1):
            block = UnetBlock(mult * ngf, 2 * mult * ngf, sub=block)
        self.model = UnetBlock(cout, ngf, cin=cin, sub=block, outermost=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def anime_lineart_map(net: UnetGenerator, image: np.ndarray) -> np.ndarray:
    """(H, W) uint8 line drawing (dark lines on white) of an (H, W, 3) uint8 RGB image."""
    h, w = image.shape[:2]
    hn, wn = 256 * int(np.ceil(h / 256.0)), 256 * int(np.ceil(w / 256.0))
    x = cv2().resize(image, (wn, hn), interpolation=cv2().INTER_CUBIC)
    with torch.no_grad():
        line = net(common.to_tensor(x, net) / 127.5 - 1.0)[0, 0] * 127.5 + 127.5
    line = cv2().resize(line.float().cpu().numpy(), (w, h), interpolation=cv2().INTER_CUBIC)
    return line.clip(0, 255).astype(np.uint8)


def lineart_anime(image: np.ndarray, resolution: int, a: float, b: float, rng=None, folders=None) -> np.ndarray:
    net = common.load_net(folders, SUBFOLDER, FILENAME, UnetGenerator, strip_module=True)
    padded, unpad = resize_with_pad(image, resolution)
    return hwc3(unpad(255 - anime_lineart_map(net, padded)))


PREPROCESSORS = (
    Preprocessor("lineart_anime", "lineart_anime", lineart_anime, tags=("Lineart",)),
)
