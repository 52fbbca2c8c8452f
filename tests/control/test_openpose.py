"""The OpenPose preprocessors against the extension's own annotator code: network file layouts,
drawing and decoding compared with what upstream computed on the same inputs (recorded by
fixtures/annotators/openpose/make_openpose_fixtures.py), plus loading random weights from the
original file layout through the model folders."""
import hashlib
import importlib.util
import json
import os

import numpy as np
import pytest
import torch

from sdrt.control.annotators import MissingAnnotatorError
from sdrt.control.preprocessors import openpose as op
from sdrt.control.preprocessors.openpose import body, draw, face, hand
from sdrt.loaders.model_folders import ModelFolders

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "annotators", "openpose")
with open(os.path.join(FIXTURES, "openpose_reference.json")) as f:
    REF = json.load(f)
_spec = importlib.util.spec_from_file_location("make_openpose_fixtures",
                                               os.path.join(FIXTURES, "make_openpose_fixtures.py"))
INPUTS = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(INPUTS)

NETS = {"body_pose_model.pth": (body.BodyPoseNet, True), "hand_pose_model.pth": (hand.HandPoseNet, True),
        "facenet.pth": (face.FaceNet, False)}


def _file_layout(cls, strip):
    return [[k.split(".", 1)[1] if strip else k, list(v.shape)] for k, v in cls().state_dict().items()]


@pytest.mark.parametrize("filename", sorted(NETS))
def test_state_dict_layout_matches_the_original_files(filename):
    cls, strip = NETS[filename]
    assert _file_layout(cls, strip) == REF["layouts"][filename]


def _write_random_files(root, files=tuple(NETS)):
    folder = root / "extensions" / "sd-webui-controlnet" / "annotator" / "downloads" / "openpose"
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for filename in files:
        keys = REF["layouts"][filename]
        # weights ~ N(0, 0.5 / fan_in): activations shrink layer by layer, so the random maps stay small
        state = {k: torch.randn(shape, generator=g) * (0.5 / float(np.prod(shape[1:]))) ** 0.5 if len(shape) > 1
                 else torch.zeros(shape) for k, shape in keys}
        torch.save(state, str(folder / filename))
    return folder


def test_metadata():
    by_name = {p.name: p for p in op.PREPROCESSORS}
    assert set(by_name) == {"openpose", "openpose_full"}
    assert by_name["openpose"].label == "openpose" and by_name["openpose"].priority == 0
    assert by_name["openpose_full"].label == "openpose_full" and by_name["openpose_full"].priority == 100
    assert all(p.tags == ("OpenPose",) and p.slider_1 is None and p.slider_2 is None for p in op.PREPROCESSORS)


def test_random_weights_load_and_run(tmp_path, monkeypatch):
    monkeypatch.setattr(hand, "SCALES", (0.25,))  # only matters if the random body net finds people
    monkeypatch.setattr(face, "INPUT_SIZE", 64)
    _write_random_files(tmp_path)
    folders = ModelFolders(str(tmp_path))
    net = op._net(folders, "body_pose_model.pth", body.BodyPoseNet, True)
    ref = torch.load(str(tmp_path / "extensions/sd-webui-controlnet/annotator/downloads/openpose/body_pose_model.pth"))
    assert torch.equal(net.model0.conv1_1.weight.cpu(), ref["conv1_1.weight"])
    image = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    for p in op.PREPROCESSORS:
        out = p.run(image, 64, 0.5, 0.5, folders=folders)
        assert out.dtype == np.uint8 and out.shape == (64, round(56 * 64 / 40), 3)
    pose = op.pose_json(image, 64, folders, full=True)
    assert pose["canvas_height"] == 64 and pose["canvas_width"] == 128 and isinstance(pose["people"], list)


def _planted_person(tmp_path, monkeypatch) -> ModelFolders:
    """Random-weight files in an annotator folder, and body decoding replaced by the planted person."""
    _write_random_files(tmp_path)
    cand = np.array([[x, y, 1.0, i] for i, (x, y) in enumerate(INPUTS.BODY_KEYPOINTS)])
    subset = np.array([list(range(18)) + [18.0, 18]], dtype=np.float64)
    monkeypatch.setattr(op, "estimate_body", lambda net, img: (cand, subset))
    return ModelFolders(str(tmp_path))


def test_full_pipeline_with_a_planted_person(tmp_path, monkeypatch):
    """Body decoding replaced by the planted person so the real hand and face networks (random
    weights; smaller inputs to stay quick on CPU) run; JSON and map follow the people found."""
    folders = _planted_person(tmp_path, monkeypatch)
    h, w = INPUTS.BODY_HW
    monkeypatch.setattr(hand, "SCALES", (0.25,))
    monkeypatch.setattr(face, "INPUT_SIZE", 64)
    image = np.zeros((h, w, 3), np.uint8)
    people = op.detect_people(image, folders, hands=True, face=True)
    assert len(people) == 1
    person = people[0]
    assert person["body"][1] == pytest.approx((80 / w, 50 / h))
    assert len(person["left_hand"]) == 21 and len(person["right_hand"]) == 21
    canvas, pose = op.detect(np.zeros((64, 64, 3), np.uint8), 64, folders, hands=True, face=True)
    assert canvas.shape == (64, 64, 3)
    p = pose["people"][0]
    assert set(p) == {"pose_keypoints_2d", "face_keypoints_2d", "hand_left_keypoints_2d", "hand_right_keypoints_2d"}
    assert len(p["pose_keypoints_2d"]) == 54 and p["pose_keypoints_2d"][3:6] == [80 / 64, 50 / 64, 1.0]


def test_json_encoding():
    people = [{"body": [(0.5, 0.25)] + [None] * 17, "left_hand": None, "right_hand": [(0.1, 0.2)] * 21, "face": []}]
    pose = op.encode_pose_json(people, 64, 128)
    assert pose["canvas_height"] == 64 and pose["canvas_width"] == 128 and pose["animals"] == []
    p = pose["people"][0]
    assert p["pose_keypoints_2d"][:6] == [0.5, 0.25, 1.0, 0.0, 0.0, 0.0] and len(p["pose_keypoints_2d"]) == 54
    assert p["hand_left_keypoints_2d"] is None and p["face_keypoints_2d"] is None
    assert len(p["hand_right_keypoints_2d"]) == 63


def test_drawing_matches_upstream():
    canvas = draw.draw_poses(INPUTS.DRAW_PEOPLE, *INPUTS.DRAW_HW)
    for y, x, rgb in REF["draw"]["pixels"]:
        assert canvas[y, x].tolist() == rgb, (y, x)
    assert hashlib.sha256(canvas.tobytes()).hexdigest() == REF["draw"]["sha256"]
    # by hand: the middle of the neck (80, 50) - right shoulder (60, 50) stick is 0.6 x red
    assert canvas[50, 70].tolist() == [153, 0, 0]
    # the nose disc in full red; the background black
    assert canvas[30, 80].tolist() != [0, 0, 0] and canvas[5, 5].tolist() == [0, 0, 0]
    # body only: no white face points, no blue hand joints
    body_only = draw.draw_poses(INPUTS.DRAW_PEOPLE, *INPUTS.DRAW_HW, hands=False, face=False)
    assert not (body_only == 255).all(axis=2).any()


def _same(candidate, subset, ref):
    assert np.allclose(np.asarray(candidate).reshape(-1, 4), np.asarray(ref["candidate"]).reshape(-1, 4))
    assert np.allclose(np.asarray(subset).reshape(-1, 20), np.asarray(ref["subset"]).reshape(-1, 20))


def test_decoding_finds_the_planted_person():
    heat, paf = INPUTS.full_res_maps()
    candidate, subset = body.decode_body(heat, paf)
    _same(candidate, subset, REF["decode"])
    found = {(int(x), int(y)) for x, y, _, _ in candidate}
    assert set(INPUTS.BODY_KEYPOINTS) | {INPUTS.STRAY_PEAK[1]} == found
    assert len(subset) == 1 and subset[0][-1] == 18  # the stray nose is left out
    people = body.people_keypoints(candidate, subset)
    assert people[0] == [(float(x), float(y)) for x, y in INPUTS.BODY_KEYPOINTS]


def test_body_pipeline_matches_upstream():
    candidate, subset = body.estimate_body(INPUTS.StubBodyNet(), np.full((*INPUTS.BODY_HW, 3), 128, np.uint8))
    _same(candidate, subset, REF["body"])
    assert len(subset) == 1


def test_hand_and_face_boxes_and_peaks_match_upstream():
    kp = [(float(x), float(y)) for x, y in INPUTS.BODY_KEYPOINTS]
    assert [list(b) for b in hand.hand_boxes(kp, INPUTS.BODY_HW)] == REF["hand_boxes"]
    assert list(face.face_box(kp, INPUTS.BODY_HW)) == REF["face_box"]
    r = REF["hand_peaks"]
    crop = INPUTS.crop_image(*r["crop_hw"], r["seed"])
    assert hand.hand_peaks(hand.hand_heatmaps(INPUTS.StubHandNet(), crop), crop.shape[:2]).tolist() == r["peaks"]
    r = REF["face_peaks"]
    crop = INPUTS.crop_image(*r["crop_hw"], r["seed"])
    assert face.face_peaks(face.face_heatmaps(INPUTS.StubFaceNet(), crop)).tolist() == r["peaks"]


def test_missing_file_names_file_and_folder(tmp_path):
    folder = _write_random_files(tmp_path, files=("body_pose_model.pth",))
    folders = ModelFolders(str(tmp_path))
    image = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(MissingAnnotatorError) as e:
        op.openpose_full(image, 64, 0.5, 0.5, folders=folders)
    assert "hand_pose_model.pth" in str(e.value) and str(folder) in str(e.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MissingAnnotatorError) as e:
        op.openpose(image, 64, 0.5, 0.5, folders=ModelFolders(str(empty)))
    assert "body_pose_model.pth" in str(e.value) and "openpose" in str(e.value)


def test_detect_answers_the_pose_json_as_the_extension(tmp_path, monkeypatch):
    """/controlnet/detect on an OpenPose module answers "poses" beside the images (the same run's
    people; openpose_full with hands and face), and no "poses" for other modules."""
    from sdrt.server.controlnet_api import DetectJob, run_detect

    folders = _planted_person(tmp_path, monkeypatch)
    # the hand and face nets (random weights) find nothing on a blank picture: plant what they find
    monkeypatch.setattr(op, "detect_face", lambda net, keypoints, bgr: [(0.5, 0.25)] * 70)
    monkeypatch.setattr(op, "detect_hands", lambda net, keypoints, bgr: ([(0.1, 0.9)] * 21, [(0.9, 0.9)] * 21))
    image = np.zeros((64, 64, 3), np.uint8)
    answer = run_detect(DetectJob("openpose_full", [image, image], [None, None], (64, -1, -1)), folders)
    assert answer["info"] == "Success" and len(answer["images"]) == 2 and len(answer["poses"]) == 2
    person = answer["poses"][0]["people"][0]
    assert len(person["pose_keypoints_2d"]) == 54 and len(person["face_keypoints_2d"]) == 70 * 3
    assert len(person["hand_left_keypoints_2d"]) == 21 * 3
    assert answer["poses"][0]["canvas_width"] == 64
    body_only = run_detect(DetectJob("openpose", [image], [None], (64, -1, -1)), folders)["poses"][0]["people"][0]
    assert body_only["face_keypoints_2d"] is None and body_only["hand_left_keypoints_2d"] is None
    assert "poses" not in run_detect(DetectJob("canny", [image], [None], (64, 100, 200)), folders)
