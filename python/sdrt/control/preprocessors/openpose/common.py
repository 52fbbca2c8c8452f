"""What the three OpenPose networks share: VGG-style conv stacks named as in the CMU Caffe models,
loading the annotator files (whose keys lack the stack prefix), and the resize / pad helpers the
extension's openpose annotator applies around each network call."""
from __future__ import annotations

from collections import OrderedDict
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from ...cv import cv2
from ....loaders.state_dict import read_state_dict

# a conv layer: (name, in, out, kernel, padding), stride 1; a pool layer: (name,) -> 2x2 stride-2 max pool
Layer = tuple


def conv_stack(layers: Sequence[Layer], last_linear: bool) -> nn.Sequential:
    """Convolutions each followed by ReLU ("relu_<name>"), 2x2 max pools where a name holds
    "pool"; the last convolution is linear when `last_linear`."""
    mods: list = []
    for n, layer in enumerate(layers):
        name = layer[0]
        if "pool" in name:
            mods.append((name, nn.MaxPool2d(2, 2, 0)))
            continue
        _, cin, cout, k, pad = layer
        mods.append((name, nn.Conv2d(cin, cout, k, 1, pad)))
        if not (last_linear and n == len(layers) - 1):
            mods.append(("relu_" + name, nn.ReLU(inplace=True)))
    return nn.Sequential(OrderedDict(mods))


def vgg_trunk(last: Iterable[Layer]) -> list:
    """conv1_1 .. conv4_2 of VGG-19 with its three pools, then `last`."""
    return [("conv1_1", 3, 64, 3, 1), ("conv1_2", 64, 64, 3, 1), ("pool1_stage1",),
            ("conv2_1", 64, 128, 3, 1), ("conv2_2", 128, 128, 3, 1), ("pool2_stage1",),
            ("conv3_1", 128, 256, 3, 1), ("conv3_2", 256, 256, 3, 1), ("conv3_3", 256, 256, 3, 1),
            ("conv3_4", 256, 256, 3, 1), ("pool3_stage1",),
            ("conv4_1", 256, 512, 3, 1), ("conv4_2", 512, 512, 3, 1), *last]


def refinement_stage(suffix: str, cin: int, cout: int) -> list:
    """Mconv1..Mconv7 of a CPM refinement stage: five 7x7 convs, a 1x1, the 1x1 output."""
    return ([(f"Mconv{i}_{suffix}", cin if i == 1 else 128, 128, 7, 3) for i in range(1, 6)]
            + [(f"Mconv6_{suffix}", 128, 128, 1, 0), (f"Mconv7_{suffix}", 128, cout, 1, 0)])


def load_weights(module: nn.Module, path: str, strip_prefix: bool) -> nn.Module:
    """Load an annotator file into `module`: its keys are the module's with the first component
    (the stack's attribute name) removed when `strip_prefix` (the CMU / lllyasviel layout);
    files keyed by the full module names load too."""
    state = read_state_dict(path)
    wanted = module.state_dict().keys()
    if not strip_prefix or all(k in state for k in wanted):
        source = {k: state.get(k) for k in wanted}
    else:
        source = {k: state.get(k.split(".", 1)[1]) for k in wanted}
    missing = [k for k, v in source.items() if v is None]
    if missing:
        raise ValueError(f"{path}: not an OpenPose {type(module).__name__} file: "
                         f"{len(missing)} weights missing (first: {missing[0]})")
    module.load_state_dict(source, strict=True)
    return module.eval().requires_grad_(False)


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def smart_resize(x: np.ndarray, height: float, width: float) -> np.ndarray:
    """Resize to (int(width), int(height)): area when shrinking (by the summed sides), Lanczos-4
    when growing; maps with other than 1 or 3 channels one channel at a time."""
    channels = 1 if x.ndim == 2 else x.shape[2]
    if channels not in (1, 3):
        return np.stack([smart_resize(x[:, :, c], height, width) for c in range(channels)], axis=2)
    k = float(height + width) / float(x.shape[0] + x.shape[1])
    interp = cv2().INTER_AREA if k < 1 else cv2().INTER_LANCZOS4
    return cv2().resize(x, (int(width), int(height)), interpolation=interp)


def smart_resize_by(x: np.ndarray, factor: float) -> np.ndarray:
    return smart_resize(x, x.shape[0] * factor, x.shape[1] * factor)


def pad_right_down(img: np.ndarray, stride: int, value: int) -> tuple[np.ndarray, int, int]:
    """Pad bottom and right with `value` up to multiples of `stride`; returns (padded, pad_down, pad_right)."""
    h, w = img.shape[:2]
    down, right = -h % stride, -w % stride
    padded = np.pad(img, [[0, down], [0, right], [0, 0]], mode="constant", constant_values=value)
    return padded, down, right


def network_input(img: np.ndarray) -> torch.Tensor:
    """(h, w, 3) -> (1, 3, h, w) float32 in [-0.5, 0.5): x / 256 - 0.5."""
    x = np.ascontiguousarray(np.float32(img).transpose(2, 0, 1)[None]) / 256 - 0.5
    return torch.from_numpy(x).float()


def maps_at(net_out: torch.Tensor, stride: int, padded_hw: tuple[int, int], pad: tuple[int, int],
            size_hw: tuple[int, int]) -> np.ndarray:
    """A network's (1, C, h/stride, w/stride) output as (H, W, C): grown by `stride`, the padding
    cut off, then resized to `size_hw`."""
    m = np.transpose(np.squeeze(net_out.float().cpu().numpy(), 0), (1, 2, 0))
    m = smart_resize_by(m, stride)
    m = m[:padded_hw[0] - pad[0], :padded_hw[1] - pad[1], :]
    return smart_resize(m, size_hw[0], size_hw[1])
