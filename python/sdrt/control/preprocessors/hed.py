"""softedge_hed: lllyasviel's Apache-2.0 HED re-implementation (ControlNetHED_Apache2, RGB input),
weights ControlNetHED.pth in the annotator subfolder "hed".

Flow (the extension's `hed`): pad-resize to the resolution, feed the raw 0..255 RGB values minus a
learnt per-channel offset, take the five side projections (full, 1/2, ... 1/16 scale), resize each
bilinearly to the padded size, average them, sigmoid (float64), x255 clipped to uint8, unpad."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..cv import cv2
from ..image_resize import hwc3, resize_with_pad
from . import _annotator_net as common
from .base import Preprocessor

SUBFOLDER, FILENAME = "hed", "ControlNetHED.pth"


class HEDBlock(nn.Module):
    """`n` 3x3 conv + ReLU layers (optionally after a 2x2 max-pool) and a 1-channel 1x1 projection."""

    def __init__(self, cin: int, cout: int, n: int):
        super().__init__()
        self.convs = nn.Sequential(*[nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1) for i in range(n)])
        self.projection = nn.Conv2d(cout, 1, 1)

    def forward(self, x: torch.Tensor, pool: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        if pool:
            x = F.max_pool2d(x, 2, 2)
        for conv in self.convs:
            x = F.relu(conv(x))
        return x, self.projection(x)


class ControlNetHED(nn.Module):
    """Keys: norm (1, 3, 1, 1), block1..block5.{convs.i, projection}.{weight, bias}."""

    LAYOUT = ((3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3))

    def __init__(self):
        super().__init__()
        self.norm = nn.Parameter(torch.zeros(1, 3, 1, 1))
        for i, (cin, cout, n) in enumerate(self.LAYOUT, start=1):
            setattr(self, f"block{i}", HEDBlock(cin, cout, n))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = x - self.norm
        projections = []
        for i in range(1, 6):
            h, p = getattr(self, f"block{i}")(h, pool=i > 1)
            projections.append(p)
        return projections


def hed_edges(net: ControlNetHED, image: np.ndarray) -> np.ndarray:
    """(H, W) uint8 soft edges of an (H, W, 3) uint8 RGB image."""
    h, w = image.shape[:2]
    with torch.no_grad():
        projections = net(common.to_tensor(image, net))
    maps = [cv2().resize(p[0, 0].float().cpu().numpy(), (w, h), interpolation=cv2().INTER_LINEAR)
            for p in projections]
    mean = np.mean(np.stack(maps, axis=2), axis=2).astype(np.float64)
    with np.errstate(over="ignore"):  # exp overflow is a sigmoid of 0, as upstream
        return common.to_uint8(1.0 / (1.0 + np.exp(-mean)))


def softedge_hed(image: np.ndarray, resolution: int, a: float, b: float, rng=None, folders=None) -> np.ndarray:
    net = common.load_net(folders, SUBFOLDER, FILENAME, ControlNetHED)
    padded, unpad = resize_with_pad(image, resolution)
    return hwc3(unpad(hed_edges(net, padded)))


PREPROCESSORS = (
    Preprocessor("hed", "softedge_hed", softedge_hed, tags=("SoftEdge",)),
)
