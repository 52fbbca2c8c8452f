"""The pose map as the sd-webui-controlnet extension draws it on a black canvas (RGB): per person
the body limbs as filled ellipses (half-axes length/2 x 4) in 0.6 x the limb colour, then the
keypoints as radius-4 discs in full colour; hand bones as 2-pixel lines coloured around the HSV
hue circle with radius-4 blue (0, 0, 255) joints; face landmarks as radius-3 white discs.
Keypoints are (x, y) normalised to [0, 1] (None where missing); a set not all within [-1, 1] is
taken as pixels, as the extension does."""
from __future__ import annotations

import colorsys
import math
from typing import Optional, Sequence

import numpy as np

from ...cv import cv2
from .body import LIMBS

STICK_WIDTH = 4
EPS = 0.01
COLORS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
          (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
          (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
DRAWN_LIMBS = LIMBS[:17]  # the ear - shoulder limbs are not drawn
HAND_EDGES = ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11), (11, 12),
              (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20))
HAND_COLORS = tuple(tuple(c * 255 for c in colorsys.hsv_to_rgb(i / len(HAND_EDGES), 1.0, 1.0))
                    for i in range(len(HAND_EDGES)))

Point = Optional[Sequence[float]]


def _scale(canvas: np.ndarray, points: Sequence[Point]) -> tuple[float, float]:
    present = [p for p in points if p is not None]
    if present and all(abs(p[0]) <= 1 and abs(p[1]) <= 1 for p in present):
        return float(canvas.shape[0]), float(canvas.shape[1])
    return 1.0, 1.0


def draw_body(canvas: np.ndarray, keypoints: Sequence[Point]) -> np.ndarray:
    h, w = _scale(canvas, keypoints)
    for (a, b), color in zip(DRAWN_LIMBS, COLORS):
        p, q = keypoints[a - 1], keypoints[b - 1]
        if p is None or q is None:
            continue
        xs, ys = np.array([p[0], q[0]]) * w, np.array([p[1], q[1]]) * h
        length = math.hypot(xs[0] - xs[1], ys[0] - ys[1])
        angle = math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1]))
        polygon = cv2().ellipse2Poly((int(np.mean(xs)), int(np.mean(ys))), (int(length / 2), STICK_WIDTH),
                                     int(angle), 0, 360, 1)
        cv2().fillConvexPoly(canvas, polygon, [int(float(c) * 0.6) for c in color])
    for p, color in zip(keypoints, COLORS):
        if p is not None:
            cv2().circle(canvas, (int(p[0] * w), int(p[1] * h)), 4, color, thickness=-1)
    return canvas


def draw_hand(canvas: np.ndarray, keypoints: Optional[Sequence[Point]]) -> np.ndarray:
    if not keypoints:
        return canvas
    h, w = _scale(canvas, keypoints)
    for (a, b), color in zip(HAND_EDGES, HAND_COLORS):
        p, q = keypoints[a], keypoints[b]
        if p is None or q is None:
            continue
        x1, y1, x2, y2 = int(p[0] * w), int(p[1] * h), int(q[0] * w), int(q[1] * h)
        if x1 > EPS and y1 > EPS and x2 > EPS and y2 > EPS:
            cv2().line(canvas, (x1, y1), (x2, y2), color, thickness=2)
    for p in keypoints:
        if p is not None:
            x, y = int(p[0] * w), int(p[1] * h)
            if x > EPS and y > EPS:
                cv2().circle(canvas, (x, y), 4, (0, 0, 255), thickness=-1)
    return canvas


def draw_face(canvas: np.ndarray, keypoints: Optional[Sequence[Point]]) -> np.ndarray:
    if not keypoints:
        return canvas
    h, w = _scale(canvas, keypoints)
    for p in keypoints:
        if p is not None:
            x, y = int(p[0] * w), int(p[1] * h)
            if x > EPS and y > EPS:
                cv2().circle(canvas, (x, y), 3, (255, 255, 255), thickness=-1)
    return canvas


def draw_poses(people: Sequence[dict], height: int, width: int, body: bool = True, hands: bool = True,
               face: bool = True) -> np.ndarray:
    """`people`: dicts with "body" (18 points), "left_hand", "right_hand", "face" (lists or None)."""
    canvas = np.zeros((height, width, 3), np.uint8)
    for person in people:
        if body:
            canvas = draw_body(canvas, person["body"])
        if hands:
            canvas = draw_hand(canvas, person.get("left_hand"))
            canvas = draw_hand(canvas, person.get("right_hand"))
        if face:
            canvas = draw_face(canvas, person.get("face"))
    return canvas
