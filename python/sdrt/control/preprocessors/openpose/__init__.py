"""The extension's OpenPose preprocessors ("openpose": body; "openpose_full": body, hands, face)
on the CMU networks in the lllyasviel annotator files (annotator subfolder "openpose":
body_pose_model.pth, hand_pose_model.pth, facenet.pth; read with read_state_dict, never unpickled
freely). As the extension: the image is resized to the processing resolution and padded to
multiples of 64, detected there (as BGR), drawn on a black canvas of the padded size, then the
padding is cut off. `detect` also returns the pose JSON the extension's /controlnet/detect gives
("people" with flat [x, y, 1.0] keypoints normalised by the padded canvas, [0, 0, 0] for a missing
body keypoint, null for a missing hand / face; "animals"; "canvas_height", "canvas_width")."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ...annotators import annotator_file, cached
from ...image_resize import resize_with_pad
from ..base import Preprocessor
from .body import BodyPoseNet, estimate_body, people_keypoints
from .common import device, load_weights
from .draw import draw_poses
from .face import FaceNet, detect_face
from .hand import HandPoseNet, detect_hands

SUBFOLDER = "openpose"
BODY_FILE, HAND_FILE, FACE_FILE = "body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"


def _net(folders, filename: str, cls, strip_prefix: bool):
    path = annotator_file(folders, SUBFOLDER, filename)
    return cached(path, lambda p: load_weights(cls(), p, strip_prefix).to(device()))


def _compress(points: Optional[list]) -> Optional[list]:
    if not points:
        return None
    flat: list = []
    for p in points:
        flat += [0.0, 0.0, 0.0] if p is None else [float(p[0]), float(p[1]), 1.0]
    return flat


def encode_pose_json(people: list, height: int, width: int) -> dict:
    """The extension's openpose JSON of `people` (dicts of normalised keypoints)."""
    return {"people": [{"pose_keypoints_2d": _compress(p["body"]),
                        "face_keypoints_2d": _compress(p.get("face")),
                        "hand_left_keypoints_2d": _compress(p.get("left_hand")),
                        "hand_right_keypoints_2d": _compress(p.get("right_hand"))} for p in people],
            "animals": [], "canvas_height": int(height), "canvas_width": int(width)}


def detect_people(image_rgb: np.ndarray, folders=None, hands: bool = False, face: bool = False) -> list[dict]:
    """The people in an RGB uint8 image (at the size given), keypoints normalised by its size."""
    bgr = np.ascontiguousarray(image_rgb[:, :, ::-1])
    h, w = bgr.shape[:2]
    body_net = _net(folders, BODY_FILE, BodyPoseNet, True)
    hand_net = _net(folders, HAND_FILE, HandPoseNet, True) if hands else None
    face_net = _net(folders, FACE_FILE, FaceNet, False) if face else None
    candidate, subset = estimate_body(body_net, bgr)
    people = []
    for keypoints in people_keypoints(candidate, subset):
        left, right = detect_hands(hand_net, keypoints, bgr) if hands else (None, None)
        landmarks = detect_face(face_net, keypoints, bgr) if face else None
        people.append({"body": [None if p is None else (p[0] / float(w), p[1] / float(h)) for p in keypoints],
                       "left_hand": left, "right_hand": right, "face": landmarks})
    return people


def detect(image: np.ndarray, resolution: int, folders=None, hands: bool = False,
           face: bool = False) -> tuple[np.ndarray, dict]:
    """(the control map (H', W', 3) uint8, the pose JSON) as the extension's openpose modules."""
    padded, unpad = resize_with_pad(image, resolution)
    h, w = padded.shape[:2]
    people = detect_people(padded, folders, hands, face)
    canvas = draw_poses(people, h, w, body=True, hands=hands, face=face)
    return unpad(canvas), encode_pose_json(people, h, w)


def pose_json(image: np.ndarray, resolution: int, folders=None, full: bool = False) -> dict:
    return detect(image, resolution, folders, hands=full, face=full)[1]


def openpose(image: np.ndarray, resolution: int, a: float, b: float, rng=None, folders=None) -> np.ndarray:
    return detect(image, resolution, folders)[0]


def openpose_full(image: np.ndarray, resolution: int, a: float, b: float, rng=None, folders=None) -> np.ndarray:
    return detect(image, resolution, folders, hands=True, face=True)[0]


# module name -> fn(image, resolution, folders) -> (map, pose JSON), for /controlnet/detect
DETECTORS = {
    "openpose": lambda image, resolution, folders=None: detect(image, resolution, folders),
    "openpose_full": lambda image, resolution, folders=None: detect(image, resolution, folders, hands=True, face=True),
}

PREPROCESSORS: tuple[Preprocessor, ...] = (
    Preprocessor("openpose", "openpose", openpose, priority=0, tags=("OpenPose",)),
    Preprocessor("openpose_full", "openpose_full", openpose_full, priority=100, tags=("OpenPose",)),
)
