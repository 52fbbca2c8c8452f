"""The OpenPose face landmark network (VGG trunk, six CPM stages, 71 heatmaps: 70 landmarks and
background) as the openpose annotator uses it: a square box around the head from the nose, eyes and
ears, the crop resized to 384 x 384, the last stage's heatmaps bilinearly resized to the crop, the
maximum of each map above 0.05."""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .common import smart_resize

INPUT_SIZE = 384
THRESHOLD = 0.05
MIN_BOX = 20

_TRUNK = (("conv1_1", 3, 64, 3), ("conv1_2", 64, 64, 3), "pool", ("conv2_1", 64, 128, 3), ("conv2_2", 128, 128, 3),
          "pool", ("conv3_1", 128, 256, 3), ("conv3_2", 256, 256, 3), ("conv3_3", 256, 256, 3),
          ("conv3_4", 256, 256, 3), "pool", ("conv4_1", 256, 512, 3), ("conv4_2", 512, 512, 3),
          ("conv4_3", 512, 512, 3), ("conv4_4", 512, 512, 3), ("conv5_1", 512, 512, 3), ("conv5_2", 512, 512, 3),
          ("conv5_3_CPM", 512, 128, 3))


class FaceNet(nn.Module):
    """Flat conv attributes, named as in the annotator file (conv1_1 .. Mconv7_stage6)."""

    def __init__(self):
        super().__init__()
        for layer in _TRUNK:
            if layer != "pool":
                name, cin, cout, k = layer
                self.add_module(name, nn.Conv2d(cin, cout, k, 1, k // 2))
        self.conv6_1_CPM = nn.Conv2d(128, 512, 1)
        self.conv6_2_CPM = nn.Conv2d(512, 71, 1)
        for stage in range(2, 7):
            for i in range(1, 8):
                cin = 199 if i == 1 else 128
                cout = 71 if i == 7 else 128
                k = 7 if i <= 5 else 1
                self.add_module(f"Mconv{i}_stage{stage}", nn.Conv2d(cin, cout, k, 1, k // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's heatmaps."""
        h = x
        for layer in _TRUNK:
            h = F.max_pool2d(h, 2, 2) if layer == "pool" else F.relu(getattr(self, layer[0])(h))
        features = h
        out = self.conv6_2_CPM(F.relu(self.conv6_1_CPM(features)))
        for stage in range(2, 7):
            h = torch.cat([out, features], 1)
            for i in range(1, 7):
                h = F.relu(getattr(self, f"Mconv{i}_stage{stage}")(h))
            out = getattr(self, f"Mconv7_stage{stage}")(h)
        return out


def face_box(keypoints: list, image_hw: tuple[int, int]) -> Optional[tuple[int, int, int]]:
    """(x, y, width) of the face box of one person (pixel keypoints, None where missing), or None:
    needs the nose (0) and an eye (14, 15) or ear (16, 17); the half side is the largest of 3 x the
    nose-eye and 1.5 x the nose-ear Chebyshev distances. The clipping to the image compares the
    half side, as upstream does."""
    image_h, image_w = image_hw
    head = keypoints[0]
    if head is None or all(keypoints[i] is None for i in (14, 15, 16, 17)):
        return None
    x0, y0 = head
    width = 0.0
    for i, factor in ((14, 3.0), (15, 3.0), (16, 1.5), (17, 1.5)):
        if keypoints[i] is not None:
            x1, y1 = keypoints[i]
            width = max(width, max(abs(x0 - x1), abs(y0 - y1)) * factor)
    x, y = max(x0 - width, 0), max(y0 - width, 0)
    w1 = image_w - x if x + width > image_w else width * 2
    w2 = image_h - y if y + width > image_h else width * 2
    width = min(w1, w2)
    return (int(x), int(y), int(width)) if width >= MIN_BOX else None


def face_heatmaps(net: Callable, crop_bgr: np.ndarray) -> np.ndarray:
    """(71, h, w) heatmaps of a face crop at the crop's size."""
    h, w = crop_bgr.shape[:2]
    x = torch.from_numpy(smart_resize(crop_bgr, INPUT_SIZE, INPUT_SIZE)).permute(2, 0, 1) / 256.0 - 0.5
    param = next(iter(net.parameters()), None) if isinstance(net, nn.Module) else None
    if param is not None:
        x = x.to(param.device, param.dtype)
    with torch.no_grad():
        out = net(x[None])
        if isinstance(out, (list, tuple)):  # a network giving every stage's maps: the last
            out = out[-1]
        return F.interpolate(out.float(), (h, w), mode="bilinear", align_corners=True).cpu().numpy()[0]


def face_peaks(heatmaps: np.ndarray) -> np.ndarray:
    """(n, 2) int (x, y): for each map (all 71) with values above 0.05 its first maximum in
    row-major order; maps without are skipped (so n may be under 71)."""
    peaks = []
    for m in heatmaps:
        if (m > THRESHOLD).any():
            y, x = np.unravel_index(int(np.argmax(np.where(m > THRESHOLD, m, -np.inf))), m.shape)
            peaks.append([x, y])
    return np.array(peaks)


def detect_face(net: Callable, keypoints: list, image_bgr: np.ndarray) -> Optional[list]:
    """The face landmarks of one person normalised by the image size, or None."""
    box = face_box(keypoints, image_bgr.shape[:2])
    if box is None:
        return None
    x, y, width = box
    h, w = image_bgr.shape[:2]
    peaks = face_peaks(face_heatmaps(net, image_bgr[y:y + width, x:x + width, :])).astype(np.float32)
    if peaks.ndim != 2 or peaks.shape[1] != 2:
        return None
    px = np.where(peaks[:, 0] < 1e-6, -1, peaks[:, 0] + x) / float(w)
    py = np.where(peaks[:, 1] < 1e-6, -1, peaks[:, 1] + y) / float(h)
    return [(float(a), float(b)) for a, b in zip(px, py)]
