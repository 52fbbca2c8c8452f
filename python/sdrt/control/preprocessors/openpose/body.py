"""The CMU body pose network (Cao et al. 2017, the 18-keypoint COCO model: a VGG-19 trunk, then six
two-branch stages: part-affinity fields "L1" (38 channels) and keypoint heatmaps "L2" (19)) and its
decoding as the sd-webui-controlnet openpose annotator does it: one scale (0.5 x 368 / H), peaks
of the gaussian-smoothed heatmaps, limbs scored along the PAFs, greedy assembly into people."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from .common import conv_stack, maps_at, network_input, pad_right_down, refinement_stage, smart_resize_by, vgg_trunk

SCALES = (0.5,)
BOXSIZE, STRIDE, PAD_VALUE = 368, 8, 128
PEAK_THRESHOLD, PAF_THRESHOLD = 0.1, 0.05
PAF_SAMPLES = 10

# limbs as pairs of 1-based keypoints (COCO-18 order: nose, neck, r-shoulder, r-elbow, r-wrist,
# l-shoulder, l-elbow, l-wrist, r-hip, r-knee, r-ankle, l-hip, l-knee, l-ankle, r-eye, l-eye,
# r-ear, l-ear) and the two PAF channels (x, y) of each
LIMBS = ((2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12), (12, 13),
         (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18), (3, 17), (6, 18))
PAF_CHANNELS = ((12, 13), (20, 21), (14, 15), (16, 17), (22, 23), (24, 25), (0, 1), (2, 3), (4, 5), (6, 7),
                (8, 9), (10, 11), (28, 29), (30, 31), (34, 35), (32, 33), (36, 37), (18, 19), (26, 27))
NEW_PERSON_LIMBS = 17  # the last two limbs (ear - shoulder) only join existing people


class BodyPoseNet(nn.Module):
    """Module names as in the original (model0, model{stage}_{1: PAF, 2: heatmap}), conv names as in
    the Caffe model; the annotator file's keys are these without the model* prefix."""

    def __init__(self):
        super().__init__()
        self.model0 = conv_stack(vgg_trunk([("conv4_3_CPM", 512, 256, 3, 1), ("conv4_4_CPM", 256, 128, 3, 1)]),
                                 last_linear=False)
        # registered as upstream does (all PAF stages, then all heatmap stages): the same key order
        for branch, cout in ((1, 38), (2, 19)):
            first = [(f"conv5_{i}_CPM_L{branch}", 128, 128, 3, 1) for i in (1, 2, 3)]
            first += [(f"conv5_4_CPM_L{branch}", 128, 512, 1, 0), (f"conv5_5_CPM_L{branch}", 512, cout, 1, 0)]
            setattr(self, f"model1_{branch}", conv_stack(first, last_linear=True))
            for stage in range(2, 7):
                # upstream's list of linear layers names the stage-6 PAF output twice and the stage-6
                # heatmap output never: that last heatmap conv is followed by a ReLU
                linear = not (stage == 6 and branch == 2)
                setattr(self, f"model{stage}_{branch}",
                        conv_stack(refinement_stage(f"stage{stage}_L{branch}", 185, cout), last_linear=linear))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model0(x)
        h = features
        for stage in range(1, 7):
            paf = getattr(self, f"model{stage}_1")(h)
            heat = getattr(self, f"model{stage}_2")(h)
            h = torch.cat([paf, heat, features], 1)
        return paf, heat


def body_maps(net: Callable, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(heatmaps (H, W, 19), PAFs (H, W, 38)) of a BGR uint8 image at its own size."""
    h, w = image_bgr.shape[:2]
    heat_avg = np.zeros((h, w, 19))
    paf_avg = np.zeros((h, w, 38))
    for scale in (s * BOXSIZE / h for s in SCALES):
        padded, down, right = pad_right_down(smart_resize_by(image_bgr, scale), STRIDE, PAD_VALUE)
        x = network_input(padded)
        param = next(iter(net.parameters()), None) if isinstance(net, nn.Module) else None
        if param is not None:
            x = x.to(param.device, param.dtype)
        with torch.no_grad():
            paf, heat = net(x)
        heat = maps_at(heat, STRIDE, padded.shape[:2], (down, right), (h, w))
        paf = maps_at(paf, STRIDE, padded.shape[:2], (down, right), (h, w))
        heat_avg += heat_avg + heat / len(SCALES)  # upstream's accumulation (exact for one scale)
        paf_avg += paf / len(SCALES)
    return heat_avg, paf_avg


def find_peaks(heatmaps: np.ndarray) -> list[list[tuple[int, int, float, int]]]:
    """Per keypoint type (18): (x, y, score, id) of the local maxima (>= the 4 neighbours, zero
    outside) of the sigma-3 smoothed heatmap above 0.1, in row-major order; score from the raw
    map, ids running over all types."""
    peaks, counter = [], 0
    for part in range(18):
        raw = heatmaps[:, :, part]
        smooth = gaussian_filter(raw, sigma=3)
        padded = np.pad(smooth, 1)
        inner = padded[1:-1, 1:-1]
        is_peak = ((inner >= padded[:-2, 1:-1]) & (inner >= padded[2:, 1:-1]) & (inner >= padded[1:-1, :-2])
                   & (inner >= padded[1:-1, 2:]) & (inner > PEAK_THRESHOLD))
        ys, xs = np.nonzero(is_peak)
        peaks.append([(int(x), int(y), float(raw[y, x]), counter + n) for n, (x, y) in enumerate(zip(xs, ys))])
        counter += len(xs)
    return peaks


def _limb_connections(paf: np.ndarray, cand_a: list, cand_b: list, image_height: int) -> np.ndarray:
    """Greedy one-to-one matching of two keypoint types' peaks by their PAF line integral: rows
    (id_a, id_b, score, i, j)."""
    scored = []
    for i, a in enumerate(cand_a):
        for j, b in enumerate(cand_b):
            vx, vy = b[0] - a[0], b[1] - a[1]
            norm = max(0.001, math.sqrt(vx * vx + vy * vy))
            ux, uy = vx / norm, vy / norm
            xs = np.rint(np.linspace(a[0], b[0], num=PAF_SAMPLES)).astype(int)
            ys = np.rint(np.linspace(a[1], b[1], num=PAF_SAMPLES)).astype(int)
            along = paf[ys, xs, 0] * ux + paf[ys, xs, 1] * uy
            score = sum(along.tolist()) / len(along) + min(0.5 * image_height / norm - 1, 0)
            if np.count_nonzero(along > PAF_THRESHOLD) > 0.8 * len(along) and score > 0:
                scored.append((i, j, score))
    scored.sort(key=lambda c: c[2], reverse=True)  # stable, as upstream's sorted
    rows: list = []
    used_a, used_b = set(), set()
    for i, j, score in scored:
        if i in used_a or j in used_b:
            continue
        rows.append([cand_a[i][3], cand_b[j][3], score, i, j])
        used_a.add(i)
        used_b.add(j)
        if len(rows) >= min(len(cand_a), len(cand_b)):
            break
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


def decode_body(heatmaps: np.ndarray, pafs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(candidate (N, 4): x, y, score, id; subset (P, 20): per person the candidate index of each of
    the 18 keypoints or -1, then the total score and the number of keypoints)."""
    peaks = find_peaks(heatmaps)
    height = heatmaps.shape[0]
    connections = []
    for (ka, kb), (cx, cy) in zip(LIMBS, PAF_CHANNELS):
        a, b = peaks[ka - 1], peaks[kb - 1]
        connections.append(_limb_connections(pafs[:, :, [cx, cy]], a, b, height) if a and b else None)

    candidate = np.array([p for part in peaks for p in part], dtype=np.float64).reshape(-1, 4)
    people = np.full((0, 20), -1.0)
    for k, conn in enumerate(connections):
        if conn is None:
            continue
        ia, ib = LIMBS[k][0] - 1, LIMBS[k][1] - 1
        for row in conn:
            part_a, part_b, limb_score = row[0], row[1], row[2]
            found = [n for n in range(len(people)) if people[n][ia] == part_a or people[n][ib] == part_b][:2]
            if len(found) == 1:
                person = people[found[0]]
                if person[ib] != part_b:
                    person[ib] = part_b
                    person[-1] += 1
                    person[-2] += candidate[int(part_b), 2] + limb_score
            elif len(found) == 2:
                p1, p2 = found
                overlap = ((people[p1] >= 0).astype(int) + (people[p2] >= 0).astype(int))[:-2]
                if not np.any(overlap == 2):  # disjoint: merge the second into the first
                    people[p1][:-2] += people[p2][:-2] + 1
                    people[p1][-2:] += people[p2][-2:]
                    people[p1][-2] += limb_score
                    people = np.delete(people, p2, 0)
                else:
                    people[p1][ib] = part_b
                    people[p1][-1] += 1
                    people[p1][-2] += candidate[int(part_b), 2] + limb_score
            elif k < NEW_PERSON_LIMBS:
                person = np.full(20, -1.0)
                person[ia], person[ib] = part_a, part_b
                person[-1] = 2
                person[-2] = candidate[int(part_a), 2] + candidate[int(part_b), 2] + limb_score
                people = np.vstack([people, person])
    keep = [n for n in range(len(people)) if not (people[n][-1] < 4 or people[n][-2] / people[n][-1] < 0.4)]
    return candidate, people[keep]


def estimate_body(net: Callable, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    heat, paf = body_maps(net, image_bgr)
    return decode_body(heat, paf)


def people_keypoints(candidate: np.ndarray, subset: np.ndarray) -> list[list]:
    """Per person the 18 keypoints as (x, y) in pixels, or None where not found."""
    return [[None if int(i) == -1 else (float(candidate[int(i)][0]), float(candidate[int(i)][1]))
             for i in person[:18]] for person in subset]
