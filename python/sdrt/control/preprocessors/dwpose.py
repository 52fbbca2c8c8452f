"""dw_openpose_full: DWPose (IDEA-Research) whole-body pose on ONNX Runtime, drawn as OpenPose
body + hands + face.

Files, where the extension keeps them (its OpenposeDetector folder): <annotators>/openpose/
yolox_l.onnx (YOLOX-L person detector) and <annotators>/openpose/dw-ll_ucoco_384.onnx (RTMPose-L
whole-body, 133 COCO-WholeBody keypoints, SimCC heads); the published DWPose ONNX files are used as
they are.

Flow (the extension's `dw_openpose_full`, which feeds the padded RGB image as is):
1. Pad-resize to the resolution.
2. Detector: letterbox to 640x640 (scale r = min(640/H, 640/W), linear resize to (int(W r),
   int(H r)) at the top-left, grey 114 elsewhere), raw 0..255 NCHW float. Output (1, A, 5 + C)
   decoded on the stride 8/16/32 grids (centre = (offset + cell) * stride, size = exp(.) * stride),
   score = objectness x class score, boxes / r. Class-aware NMS (IoU > 0.45 suppressed, "+1" pixel
   areas) over scores > 0.1, then persons (class 0) with score > 0.3 are kept. No detection at all
   -> no pose; detections but no person -> the pose model runs on the whole image.
3. Pose model per box: centre and 1.25x size of the box, widened or heightened to 288:384, the
   affine crop to 288x384 (linear), (x - mean) / std with ImageNet mean / std x255 on the RGB
   values, NCHW float. Outputs simcc_x (1, 133, 576), simcc_y (1, 133, 768): the arg-max of each,
   / 2 (split ratio), score = the smaller of the two maxima (location -1 where <= 0), mapped back
   by position / (288, 384) * size + centre - size / 2.
4. OpenPose layout: neck = mean of the shoulders (score 1 when both shoulders > 0.3, else 0)
   inserted at 17, the 18 body points reordered from COCO to OpenPose order; body 0..17, face
   24..91 (+ the two eyes, 70 points), left hand 92..112, right hand 113..133; points scoring
   below 0.3 are missing.
5. Drawn as the extension draws OpenPose skeletons (openpose.draw) on a black canvas of the
   padded size, unpadded."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..annotators import annotator_file
from ..cv import cv2
from ..image_resize import resize_with_pad
from .base import Preprocessor
from ._onnx import IOSpec, input_dtype, onnx_session
from .openpose import encode_pose_json
from .openpose.draw import draw_poses

SUBFOLDER = "openpose"
DETECTOR_FILE, POSE_FILE = "yolox_l.onnx", "dw-ll_ucoco_384.onnx"

DET_SIZE = (640, 640)                 # (H, W)
DET_STRIDES = (8, 16, 32)
NMS_IOU, DET_MIN_SCORE, PERSON_MIN_SCORE = 0.45, 0.1, 0.3
POSE_W, POSE_H = 288, 384
SIMCC_SPLIT = 2.0
BOX_PADDING = 1.25
POSE_MEAN = np.array([123.675, 116.28, 103.53], np.float64)
POSE_STD = np.array([58.395, 57.12, 57.375], np.float64)
NUM_KEYPOINTS = 133
KEYPOINT_MIN_SCORE = 0.3

DET_INPUT = IOSpec((4,), ((1, 3), (2, DET_SIZE[0]), (3, DET_SIZE[1])), text="one float input (1, 3, 640, 640)")
DET_OUTPUT = IOSpec((3,), text="a float output (1, anchors, 5 + classes): YOLOX raw head output (decode off)")
POSE_INPUT = IOSpec((4,), ((1, 3), (2, POSE_H), (3, POSE_W)), text=f"one float input (N, 3, {POSE_H}, {POSE_W})")
POSE_OUTPUTS = (
    IOSpec((3,), ((1, NUM_KEYPOINTS), (2, int(POSE_W * SIMCC_SPLIT))),
           text=f"simcc_x (N, {NUM_KEYPOINTS}, {int(POSE_W * SIMCC_SPLIT)})"),
    IOSpec((3,), ((1, NUM_KEYPOINTS), (2, int(POSE_H * SIMCC_SPLIT))),
           text=f"simcc_y (N, {NUM_KEYPOINTS}, {int(POSE_H * SIMCC_SPLIT)})"),
)

# COCO-WholeBody body order (after the neck is inserted at 17) -> OpenPose body order
_OPENPOSE_FROM_COCO = (0, 17, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)


@dataclass(frozen=True)
class Keypoint:
    x: float
    y: float
    score: float = 1.0


Part = Optional[list]  # list[Optional[Keypoint]] or None when every point is missing


@dataclass(frozen=True)
class Pose:
    """One person in OpenPose layout, pixel coordinates of the image the pose was found in."""
    body: list                 # 18 x Optional[Keypoint]
    left_hand: Part            # 21
    right_hand: Part           # 21
    face: Part                 # 70 (68 + the two eyes)


# -- detector ---------------------------------------------------------------------------------

def _letterbox(image: np.ndarray) -> tuple[np.ndarray, float]:
    h, w = image.shape[:2]
    r = min(DET_SIZE[0] / h, DET_SIZE[1] / w)
    nh, nw = int(h * r), int(w * r)
    canvas = np.full((DET_SIZE[0], DET_SIZE[1], 3), 114, np.uint8)
    canvas[:nh, :nw] = cv2().resize(image, (nw, nh), interpolation=cv2().INTER_LINEAR)
    return canvas, r


def _grids(num_anchors: int) -> tuple[np.ndarray, np.ndarray]:
    cells, strides = [], []
    for s in DET_STRIDES:
        gh, gw = DET_SIZE[0] // s, DET_SIZE[1] // s
        gy, gx = np.mgrid[0:gh, 0:gw]
        cells.append(np.stack([gx.ravel(), gy.ravel()], axis=1))
        strides.append(np.full((gh * gw, 1), s))
    cells, strides = np.concatenate(cells).astype(np.float32), np.concatenate(strides).astype(np.float32)
    if len(cells) != num_anchors:
        raise ValueError(f"the detector returned {num_anchors} anchors; a 640x640 YOLOX has {len(cells)}")
    return cells, strides


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Greedy NMS, best first; areas count pixels inclusively (+1); a box survives at IoU <= iou."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = list(np.argsort(scores)[::-1])
    keep = []
    while order:
        i, rest = order[0], np.array(order[1:], dtype=np.int64)
        keep.append(int(i))
        if not len(rest):
            break
        iw = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        ih = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = iw * ih
        overlap = inter / (areas[i] + areas[rest] - inter)
        order = list(rest[overlap <= iou])
    return keep


def detect_people(session, image: np.ndarray) -> Optional[np.ndarray]:
    """(N, 4) person boxes x1, y1, x2, y2 in image pixels; None when nothing of any class scored
    above 0.1 (an empty array when only other classes did)."""
    boxed, r = _letterbox(image)
    arg = session.get_inputs()[0]
    x = np.ascontiguousarray(boxed.transpose(2, 0, 1)[None]).astype(input_dtype(arg))
    pred = np.asarray(session.run(None, {arg.name: x})[0], dtype=np.float32)[0]  # (A, 5 + C)
    cells, strides = _grids(pred.shape[0])
    centre = (pred[:, :2] + cells) * strides
    size = np.exp(pred[:, 2:4]) * strides
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1) / r
    scores = pred[:, 4:5] * pred[:, 5:]
    found, people = False, np.zeros((0, 4), np.float32)
    for c in range(scores.shape[1]):
        valid = scores[:, c] > DET_MIN_SCORE
        if not valid.any():
            continue
        found = True
        if c == 0:
            b, s = boxes[valid], scores[valid, 0]
            keep = _nms(b, s, NMS_IOU)
            people = b[keep][s[keep] > PERSON_MIN_SCORE]
    return people if found else None


# -- pose model --------------------------------------------------------------------------------

def box_centre_size(box) -> tuple[np.ndarray, np.ndarray]:
    """Centre and size of a box, enlarged 1.25x and widened or heightened to the 288:384 aspect."""
    x1, y1, x2, y2 = (float(v) for v in box)
    centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    w, h = (x2 - x1) * BOX_PADDING, (y2 - y1) * BOX_PADDING
    aspect = POSE_W / POSE_H
    size = np.array([w, w / aspect]) if w > h * aspect else np.array([h * aspect, h])
    return centre, size


def crop_matrix(centre: np.ndarray, size: np.ndarray) -> np.ndarray:
    """2x3 affine map of image pixels onto the 288x384 crop: the box centre to the crop centre,
    the box width to the crop width, no rotation (built from three point pairs, float32 like cv2)."""
    half = size[0] / 2
    src = np.float32([centre, centre + [0, -half], centre + [-half, -half]])
    dst_c = np.array([POSE_W / 2, POSE_H / 2])
    dst = np.float32([dst_c, dst_c + [0, -POSE_W / 2], dst_c + [-POSE_W / 2, -POSE_W / 2]])
    return cv2().getAffineTransform(src, dst)


def crop_for_pose(image: np.ndarray, centre: np.ndarray, size: np.ndarray) -> np.ndarray:
    """(384, 288, 3) float crop, normalised."""
    crop = cv2().warpAffine(image, crop_matrix(centre, size), (POSE_W, POSE_H), flags=cv2().INTER_LINEAR)
    return (crop - POSE_MEAN) / POSE_STD


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, Wx), (K, Wy) -> (K, 2) crop coordinates (arg-max / split ratio; -1 / ratio where the
    score <= 0), (K,) scores (the smaller of the two maxima)."""
    locs = np.stack([simcc_x.argmax(axis=1), simcc_y.argmax(axis=1)], axis=1).astype(np.float32)
    scores = np.minimum(simcc_x.max(axis=1), simcc_y.max(axis=1)).astype(np.float32)
    locs[scores <= 0] = -1
    return locs / SIMCC_SPLIT, scores


def estimate_keypoints(session, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N, 133, 3) x, y (image pixels), score per box (the whole image when `boxes` is empty)."""
    h, w = image.shape[:2]
    if len(boxes) == 0:
        boxes = np.array([[0, 0, w, h]], np.float64)
    arg = session.get_inputs()[0]
    out = []
    for box in boxes:  # one at a time: the published file's batch dimension is fixed at 1
        centre, size = box_centre_size(box)
        x = np.ascontiguousarray(crop_for_pose(image, centre, size).transpose(2, 0, 1)[None]).astype(input_dtype(arg))
        simcc_x, simcc_y = (np.asarray(o, np.float32)[0] for o in session.run(None, {arg.name: x})[:2])
        locs, scores = decode_simcc(simcc_x, simcc_y)
        xy = locs / np.array([POSE_W, POSE_H]) * size + centre - size / 2
        out.append(np.concatenate([xy, scores[:, None]], axis=1))
    return np.stack(out)


def to_openpose(keypoints: np.ndarray) -> np.ndarray:
    """(N, 133, 3) COCO-WholeBody -> (N, 134, 3): neck inserted at 17, body 0..17 in OpenPose order."""
    neck = keypoints[:, [5, 6]].mean(axis=1)
    neck[:, 2] = ((keypoints[:, 5, 2] > KEYPOINT_MIN_SCORE) & (keypoints[:, 6, 2] > KEYPOINT_MIN_SCORE))
    out = np.insert(keypoints, 17, neck, axis=1)
    out[:, :18] = out[:, list(_OPENPOSE_FROM_COCO)]
    return out


def _part(points: np.ndarray) -> Part:
    kps = [Keypoint(float(x), float(y), float(s)) if s >= KEYPOINT_MIN_SCORE else None for x, y, s in points]
    return None if all(k is None for k in kps) else kps


def to_poses(openpose: np.ndarray) -> list[Pose]:
    poses = []
    for person in openpose:
        body = _part(person[:18]) or [None] * 18
        face = _part(person[24:92])
        if face is not None:
            face = face + [body[14], body[15]]
        poses.append(Pose(body, _part(person[92:113]), _part(person[113:134]), face))
    return poses


def detect_poses(image: np.ndarray, folders=None) -> list[Pose]:
    """The people of an (H, W, 3) uint8 RGB image, in its pixel coordinates."""
    det = onnx_session(annotator_file(folders, SUBFOLDER, DETECTOR_FILE), [DET_INPUT], [DET_OUTPUT])
    pose = onnx_session(annotator_file(folders, SUBFOLDER, POSE_FILE), [POSE_INPUT], list(POSE_OUTPUTS))
    boxes = detect_people(det, image)
    if boxes is None:
        return []
    return to_poses(to_openpose(estimate_keypoints(pose, image, boxes)))


def pose_dicts(poses: list[Pose]) -> list[dict]:
    """The people as the openpose/ package's draw_poses / encode_pose_json take them: dicts of
    "body", "left_hand", "right_hand", "face" lists of (x, y) or None, here in pixels (the
    extension's DWPose JSON carries pixel coordinates too, unlike its OpenPose one)."""
    def points(part: Part):
        return None if part is None else [None if k is None else (k.x, k.y) for k in part]
    return [{"body": points(p.body), "left_hand": points(p.left_hand), "right_hand": points(p.right_hand),
             "face": points(p.face)} for p in poses]


def detect(image: np.ndarray, resolution: int, folders=None) -> tuple[np.ndarray, dict]:
    """(the control map, the pose JSON in the padded image's pixels) of one run."""
    padded, unpad = resize_with_pad(image, resolution)
    people = pose_dicts(detect_poses(padded, folders))
    return unpad(draw_poses(people, *padded.shape[:2])), encode_pose_json(people, *padded.shape[:2])


def dw_openpose_full(image: np.ndarray, resolution: int, a: float, b: float, rng=None, folders=None) -> np.ndarray:
    return detect(image, resolution, folders)[0]


# module name -> fn(image, resolution, folders) -> (map, pose JSON), for /controlnet/detect
DETECTORS = {"dw_openpose_full": detect}


PREPROCESSORS: tuple[Preprocessor, ...] = (
    Preprocessor("dw_openpose_full", "dw_openpose_full", dw_openpose_full, tags=("OpenPose",)),
)
