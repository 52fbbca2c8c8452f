"""softedge_pidinet: PiDiNet (Su et al., pixel difference networks) in the configuration of the
ControlNet annotator's table5_pidinet.pth: "carv4" (layer i uses central / angular / radial
difference or a vanilla conv for i % 4 = 0 / 1 / 2 / 3), 60 base channels, CDCM dilation modules
with 24 channels and CSAM attention. The file keeps the raw 3x3 difference kernels (the
non-converted layout, keys prefixed "module." under "state_dict"); each difference convolution is
computed here as the plain convolution it is equivalent to (a 3x3 kernel for central / angular
differences, a 5x5 one for radial differences), built from the raw kernel at every call.

Flow (the extension's `pidinet`): pad-resize, RGB -> BGR, /255, the fused (last) sigmoid output
x255 clipped to uint8, unpad."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..image_resize import hwc3, resize_with_pad
from . import _annotator_net as common
from .base import Preprocessor

SUBFOLDER, FILENAME = "pidinet", "table5_pidinet.pth"
CARV4 = ("cd", "ad", "rd", "cv") * 4  # the op of layers 0..15
_AD_ORDER = [3, 0, 1, 6, 4, 2, 7, 8, 5]  # each 3x3 tap minus its clockwise neighbour
_RD_OUTER = [0, 2, 4, 10, 14, 20, 22, 24]  # the 5x5 ring two pixels out
_RD_INNER = [6, 7, 8, 11, 13, 16, 17, 18]  # the 3x3 ring one pixel out


def difference_kernel(op: str, w: torch.Tensor) -> torch.Tensor:
    """The plain convolution kernel equivalent to pixel-difference op `op` with raw 3x3 kernel `w`."""
    if op == "cv":
        return w
    o, i = w.shape[:2]
    flat = w.reshape(o, i, 9)
    if op == "cd":  # sum_k w_k (x_k - x_center)
        k = flat.clone()
        k[:, :, 4] -= flat.sum(dim=2)
        return k.reshape(w.shape)
    if op == "ad":
        return (flat - flat[:, :, _AD_ORDER]).reshape(w.shape)
    if op == "rd":  # sum_k w_k (x_outer_k - x_inner_k) over the 8 non-centre taps
        k = w.new_zeros(o, i, 25)
        k[:, :, _RD_OUTER] = flat[:, :, 1:]
        k[:, :, _RD_INNER] = -flat[:, :, 1:]
        return k.reshape(o, i, 5, 5)
    raise ValueError(f"unknown pixel-difference op {op!r}")


class PDConv(nn.Module):
    """A bias-free pixel-difference convolution with its raw 3x3 kernel as `weight`."""

    def __init__(self, op: str, cin: int, cout: int, groups: int = 1):
        super().__init__()
        self.op, self.groups = op, groups
        self.weight = nn.Parameter(torch.zeros(cout, cin // groups, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = difference_kernel(self.op, self.weight)
        return F.conv2d(x, k, padding=k.shape[-1] // 2, groups=self.groups)


class PDCBlock(nn.Module):
    """Depthwise difference conv -> ReLU -> 1x1 conv, plus the input (max-pooled and projected
    with a 1x1 shortcut when the block halves the resolution)."""

    def __init__(self, op: str, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.stride = stride
        if stride > 1:
            self.shortcut = nn.Conv2d(cin, cout, 1)
        self.conv1 = PDConv(op, cin, cin, groups=cin)
        self.conv2 = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = F.max_pool2d(x, 2, 2)
        y = self.conv2(F.relu(self.conv1(x)))
        return y + (self.shortcut(x) if self.stride > 1 else x)


class CDCM(nn.Module):
    """ReLU, 1x1 conv to `cout` channels, then the sum of four dilated (5, 7, 9, 11) 3x3 convs."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 1)
        for j, d in enumerate((5, 7, 9, 11), start=1):
            setattr(self, f"conv2_{j}", nn.Conv2d(cout, cout, 3, dilation=d, padding=d, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(F.relu(x))
        return sum(getattr(self, f"conv2_{j}")(x) for j in range(1, 5))


class CSAM(nn.Module):
    """Spatial attention: x * sigmoid(conv3x3(conv1x1(relu(x)))) with 4 middle channels."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 4, 1)
        self.conv2 = nn.Conv2d(4, 1, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv2(self.conv1(F.relu(x))))


class MapReduce(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class PiDiNet(nn.Module):
    """Keys: init_block.weight, block{1_1..1_3, 2_1..2_4, 3_1..3_4, 4_1..4_4}.*, dilations.i.*,
    attentions.i.*, conv_reduces.i.conv.*, classifier.*."""

    def __init__(self, channels: int = 60, ops=CARV4, dil: int = 24):
        super().__init__()
        c = channels
        self.init_block = PDConv(ops[0], 3, c)
        stages = ((c, c, 3), (c, 2 * c, 4), (2 * c, 4 * c, 4), (4 * c, 4 * c, 4))
        self.stage_blocks: list[list[str]] = []
        layer = 1
        for s, (cin, cout, n) in enumerate(stages, start=1):
            names = []
            for j in range(1, n + 1):
                stride = 2 if s > 1 and j == 1 else 1
                name = f"block{s}_{j}"
                setattr(self, name, PDCBlock(ops[layer], cin if j == 1 else cout, cout, stride))
                names.append(name)
                layer += 1
            self.stage_blocks.append(names)
        planes = [cout for _, cout, _ in stages]
        self.dilations = nn.ModuleList(CDCM(p, dil) for p in planes)
        self.attentions = nn.ModuleList(CSAM(dil) for _ in planes)
        self.conv_reduces = nn.ModuleList(MapReduce(dil) for _ in planes)
        self.classifier = nn.Conv2d(4, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The fused edge probability (1, 1, H, W) (the last of the original's five outputs)."""
        h, w = x.shape[2:]
        x = self.init_block(x)
        edges = []
        for i, names in enumerate(self.stage_blocks):
            for name in names:
                x = getattr(self, name)(x)
            e = self.conv_reduces[i](self.attentions[i](self.dilations[i](x)))
            edges.append(F.interpolate(e, (h, w), mode="bilinear", align_corners=False))
        return torch.sigmoid(self.classifier(torch.cat(edges, dim=1)))


def pidinet_edges(net: PiDiNet, image: np.ndarray) -> np.ndarray:
    """(H, W) uint8 soft edges of an (H, W, 3) uint8 RGB image (the net was trained on BGR)."""
    x = common.to_tensor(image[:, :, ::-1], net) / 255.0
    with torch.no_grad():
        edge = net(x)
    return common.to_uint8(edge[0, 0].float().cpu().numpy())


def softedge_pidinet(image: np.ndarray, resolution: int, a: float, b: float, rng=None, folders=None) -> np.ndarray:
    net = common.load_net(folders, SUBFOLDER, FILENAME, PiDiNet, strip_module=True)
    padded, unpad = resize_with_pad(image, resolution)
    return hwc3(unpad(pidinet_edges(net, padded)))


PREPROCESSORS = (
    Preprocessor("pidinet", "softedge_pidinet", softedge_pidinet, priority=100, tags=("SoftEdge",)),
)
