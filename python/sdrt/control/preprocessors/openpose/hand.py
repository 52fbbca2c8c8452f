"""The CMU hand keypoint network (Simon et al. 2017: VGG trunk, six CPM stages, 22 heatmaps: 21
keypoints and background) and its use by the openpose annotator: square boxes from each person's
arm keypoints, the crop at four sizes (0.5 .. 2 x 368), averaged heatmaps at 128 x 128, one peak per
keypoint taken in the strongest connected blob."""
from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
import torch
from scipy.ndimage import gaussian_filter, label
from torch import nn

from ...cv import cv2
from .common import conv_stack, maps_at, network_input, pad_right_down, refinement_stage, smart_resize, vgg_trunk

SCALES = (0.5, 1.0, 1.5, 2.0)
BOXSIZE, STRIDE, PAD_VALUE = 368, 8, 128
HEATMAP_SIZE = 128
THRESHOLD = 0.05
RATIO_WRIST_ELBOW = 0.33
MIN_BOX = 20


class HandPoseNet(nn.Module):
    """Module names as in the original (model1_0, model1_1, model2 .. model6); the annotator file's
    keys are these without the model* prefix."""

    def __init__(self):
        super().__init__()
        trunk = vgg_trunk([("conv4_3", 512, 512, 3, 1), ("conv4_4", 512, 512, 3, 1), ("conv5_1", 512, 512, 3, 1),
                           ("conv5_2", 512, 512, 3, 1), ("conv5_3_CPM", 512, 128, 3, 1)])
        self.model1_0 = conv_stack(trunk, last_linear=False)
        self.model1_1 = conv_stack([("conv6_1_CPM", 128, 512, 1, 0), ("conv6_2_CPM", 512, 22, 1, 0)],
                                   last_linear=True)
        for stage in range(2, 7):
            setattr(self, f"model{stage}", conv_stack(refinement_stage(f"stage{stage}", 150, 22), last_linear=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.model1_0(x)
        out = self.model1_1(features)
        for stage in range(2, 7):
            out = getattr(self, f"model{stage}")(torch.cat([out, features], 1))
        return out


def hand_boxes(keypoints: list, image_hw: tuple[int, int]) -> list[tuple[int, int, int, bool]]:
    """(x, y, width, is_left) of the square hand boxes of one person (pixel keypoints, None where
    missing): the left arm (keypoints 5, 6, 7) first, then the right (2, 3, 4); the centre a third
    of the forearm beyond the wrist, the side 1.5 x max(forearm, 0.9 x upper arm), clipped to the
    image; boxes under 20 pixels are dropped."""
    image_h, image_w = image_hw
    boxes = []
    for (shoulder, elbow, wrist), is_left in (((5, 6, 7), True), ((2, 3, 4), False)):
        if keypoints[shoulder] is None or keypoints[elbow] is None or keypoints[wrist] is None:
            continue
        (x1, y1), (x2, y2), (x3, y3) = keypoints[shoulder], keypoints[elbow], keypoints[wrist]
        x = x3 + RATIO_WRIST_ELBOW * (x3 - x2)
        y = y3 + RATIO_WRIST_ELBOW * (y3 - y2)
        width = 1.5 * max(math.sqrt((x3 - x2) ** 2 + (y3 - y2) ** 2), 0.9 * math.sqrt((x2 - x1) ** 2 + (y2 - y1) ** 2))
        x, y = max(x - width / 2, 0), max(y - width / 2, 0)
        width = min(width if x + width <= image_w else image_w - x, width if y + width <= image_h else image_h - y)
        if width >= MIN_BOX:
            boxes.append((int(x), int(y), int(width), is_left))
    return boxes


def hand_heatmaps(net: Callable, crop_bgr: np.ndarray) -> np.ndarray:
    """(128, 128, 22) heatmaps of a hand crop, averaged over the four scales."""
    blurred = cv2().GaussianBlur(crop_bgr, (0, 0), 0.8)
    avg = np.zeros((HEATMAP_SIZE, HEATMAP_SIZE, 22))
    param = next(iter(net.parameters()), None) if isinstance(net, nn.Module) else None
    for size in (s * BOXSIZE for s in SCALES):
        padded, down, right = pad_right_down(smart_resize(blurred, size, size), STRIDE, PAD_VALUE)
        x = network_input(padded)
        if param is not None:
            x = x.to(param.device, param.dtype)
        with torch.no_grad():
            out = net(x)
        avg += maps_at(out, STRIDE, padded.shape[:2], (down, right), (HEATMAP_SIZE, HEATMAP_SIZE)) / len(SCALES)
    return avg


def hand_peaks(heatmaps: np.ndarray, crop_hw: tuple[int, int]) -> np.ndarray:
    """(21, 2) int (x, y) in crop pixels; (0, 0) where the smoothed map never exceeds 0.05. The peak
    is the maximum of the raw map within the 8-connected blob (of the thresholded smoothed map) of
    the largest raw sum."""
    crop_h, crop_w = crop_hw
    out = []
    eight = np.ones((3, 3), dtype=int)
    for part in range(21):
        raw = heatmaps[:, :, part].copy()
        binary = gaussian_filter(raw, sigma=3) > THRESHOLD
        if not binary.any():
            out.append([0, 0])
            continue
        labels, count = label(binary, structure=eight)
        best = int(np.argmax([raw[labels == n].sum() for n in range(1, count + 1)])) + 1
        raw[labels != best] = 0
        row = int(raw.max(1).argmax())
        col = int(raw[row].argmax())
        out.append([int(float(col) * float(crop_w) / HEATMAP_SIZE), int(float(row) * float(crop_h) / HEATMAP_SIZE)])
    return np.array(out)


def detect_hands(net: Callable, keypoints: list, image_bgr: np.ndarray) -> tuple[Optional[list], Optional[list]]:
    """(left, right) hand keypoints of one person, normalised by the image size: 21 (x, y) each,
    (-1 / W, -1 / H) where the crop-relative peak was at 0; None for a hand without a box."""
    h, w = image_bgr.shape[:2]
    hands: dict = {True: None, False: None}
    for x, y, width, is_left in hand_boxes(keypoints, (h, w)):
        crop = image_bgr[y:y + width, x:x + width, :]
        peaks = hand_peaks(hand_heatmaps(net, crop), crop.shape[:2]).astype(np.float32)
        px = np.where(peaks[:, 0] < 1e-6, -1, peaks[:, 0] + x) / float(w)
        py = np.where(peaks[:, 1] < 1e-6, -1, peaks[:, 1] + y) / float(h)
        hands[is_left] = [(float(a), float(b)) for a, b in zip(px, py)]
    return hands[True], hands[False]
