"""The ONNX preprocessors (dw_openpose_full, depth_midas, seg_ofade20k / seg_ufade20k) on tiny
ONNX files built here with the expected signatures and planted outputs."""
import math
import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from sdrt.control.annotators import MissingAnnotatorError  # noqa: E402
from sdrt.control.image_resize import resize_with_pad  # noqa: E402
from sdrt.control.preprocessors import _onnx, depth_onnx, dwpose, seg_onnx  # noqa: E402
from sdrt.loaders.model_folders import ModelFolders  # noqa: E402

OPSET = 13


def _save(model, root, subfolder, filename):
    folder = os.path.join(root, "extensions", "sd-webui-controlnet", "annotator", "downloads", subfolder)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, filename)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def constant_model(input_shape, outputs: dict):
    """Input "input" of `input_shape`; each output the given constant (+ 0 x sum of the input)."""
    nodes = [helper.make_node("ReduceSum", ["input"], ["s"], keepdims=0),
             helper.make_node("Mul", ["s", "zero"], ["z"])]
    inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    outs = []
    for name, value in outputs.items():
        inits.append(numpy_helper.from_array(value.astype(np.float32), f"{name}_c"))
        nodes.append(helper.make_node("Add", [f"{name}_c", "z"], [name]))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(value.shape)))
    graph = helper.make_graph(nodes, "const", [helper.make_tensor_value_info("input", TensorProto.FLOAT, input_shape)],
                              outs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


# -- DWPose -------------------------------------------------------------------------------------

IMAGE_HW = (300, 400)
RES = 256                              # -> scaled 256 x 341, padded 256 x 384
PADDED_HW = (256, 384)
R = min(640 / PADDED_HW[0], 640 / PADDED_HW[1])
PERSON = (100.0, 40.0, 220.0, 230.0)    # x1, y1, x2, y2 in padded-image pixels


def _anchor_index(stride, gx, gy):
    offset = 0
    for s in (8, 16, 32):
        if s == stride:
            return offset + gy * (640 // s) + gx
        offset += (640 // s) ** 2


def _plant_box(pred, box, stride, obj, cls_scores):
    """Raw YOLOX outputs that decode to `box` (padded-image pixels) on the given stride."""
    cx, cy = (box[0] + box[2]) / 2 * R, (box[1] + box[3]) / 2 * R
    w, h = (box[2] - box[0]) * R, (box[3] - box[1]) * R
    gx, gy = int(cx // stride), int(cy // stride)
    i = _anchor_index(stride, gx, gy)
    pred[0, i, :4] = [cx / stride - gx, cy / stride - gy, math.log(w / stride), math.log(h / stride)]
    pred[0, i, 4] = obj
    pred[0, i, 5:] = cls_scores
    return i


def detector_outputs():
    pred = np.zeros((1, 8400, 85), np.float32)
    pred[0, :, 2:4] = -5.0
    person = np.zeros(80)
    person[0] = 0.9
    _plant_box(pred, PERSON, 8, 0.9, person)                                   # kept (0.81)
    _plant_box(pred, (104.0, 44.0, 222.0, 228.0), 16, 0.8, person)            # overlaps: suppressed
    weak = np.zeros(80)
    weak[0] = 0.5
    _plant_box(pred, (300.0, 100.0, 360.0, 200.0), 8, 0.5, weak)              # 0.25: NMS-kept, below 0.3
    other = np.zeros(80)
    other[5] = 0.95
    _plant_box(pred, (10.0, 150.0, 80.0, 250.0), 32, 0.95, other)             # another class
    return pred


# planted keypoints: COCO-WholeBody index -> (simcc x index, simcc y index, score)
PLANTED = {0: (288, 100, 0.9), 5: (400, 250, 0.8), 6: (170, 250, 0.85), 9: (480, 500, 0.7),
           23: (300, 60, 0.6), 91: (500, 600, 0.9), 92: (520, 640, 0.9), 112: (60, 600, 0.5),
           1: (200, 90, 0.2)}  # the last one scores below 0.3: missing


def pose_outputs():
    sx = np.zeros((1, 133, 576), np.float32)
    sy = np.zeros((1, 133, 768), np.float32)
    for k, (ix, iy, score) in PLANTED.items():
        sx[0, k, ix] = score
        sy[0, k, iy] = score + 0.05
    return sx, sy


def expected_xy(ix, iy):
    x1, y1, x2, y2 = PERSON
    w, h = (x2 - x1) * 1.25, (y2 - y1) * 1.25
    sw, sh = (w, w / 0.75) if w > h * 0.75 else (h * 0.75, h)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return ix / 2 / 288 * sw + cx - sw / 2, iy / 2 / 384 * sh + cy - sh / 2


@pytest.fixture(scope="module")
def dw_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("dwroot"))
    _save(constant_model([1, 3, 640, 640], {"output": detector_outputs()}), root, "openpose", "yolox_l.onnx")
    sx, sy = pose_outputs()
    _save(constant_model([1, 3, 384, 288], {"simcc_x": sx, "simcc_y": sy}), root, "openpose", "dw-ll_ucoco_384.onnx")
    return root


def test_detector_boxes(dw_root):
    folders = ModelFolders(dw_root)
    det = _onnx.onnx_session(os.path.join(folders.folder("annotators"), "openpose", "yolox_l.onnx"),
                                  [dwpose.DET_INPUT], [dwpose.DET_OUTPUT])
    boxes = dwpose.detect_people(det, np.zeros(PADDED_HW + (3,), np.uint8))
    assert boxes.shape == (1, 4)
    np.testing.assert_allclose(boxes[0], PERSON, atol=1e-3)


def test_nms_and_letterbox():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float32)
    assert dwpose._nms(boxes, np.array([0.5, 0.9, 0.7]), 0.45) == [1, 2]
    boxed, r = dwpose._letterbox(np.full((100, 200, 3), 7, np.uint8))
    assert r == pytest.approx(3.2) and boxed.shape == (640, 640, 3)
    assert (boxed[:320] == 7).all() and (boxed[320:] == 114).all()


def test_crop_puts_the_box_centre_at_the_crop_centre():
    image = np.zeros((300, 400, 3), np.uint8)
    image[148:153, 248:253] = 255   # a dot at (250, 150)
    centre, size = dwpose.box_centre_size((200, 50, 280, 250))
    assert size[1] / size[0] == pytest.approx(384 / 288)
    crop = dwpose.crop_for_pose(image, centre, size) * dwpose.POSE_STD + dwpose.POSE_MEAN
    weight = crop[..., 0].clip(0, None)
    ys, xs = np.mgrid[0:384, 0:288]
    x, y = (weight * xs).sum() / weight.sum(), (weight * ys).sum() / weight.sum()   # the dot's centroid
    ex, ey = (250 - centre[0]) * 288 / size[0] + 144, (150 - centre[1]) * 288 / size[0] + 192
    assert abs(x - ex) <= 0.6 and abs(y - ey) <= 0.6


def test_dwpose_keypoints_come_out_where_planted(dw_root):
    poses = dwpose.detect_poses(np.zeros(PADDED_HW + (3,), np.uint8), ModelFolders(dw_root))
    assert len(poses) == 1
    pose = poses[0]

    def check(k, coco):
        ix, iy, score = PLANTED[coco]
        assert k is not None
        assert (k.x, k.y) == pytest.approx(expected_xy(ix, iy), abs=1e-3)
        assert k.score == pytest.approx(score, abs=1e-6)

    check(pose.body[0], 0)           # nose
    check(pose.body[2], 6)           # right shoulder
    check(pose.body[5], 5)           # left shoulder
    check(pose.body[7], 9)           # left wrist (COCO 9) -> OpenPose 7
    neck = pose.body[1]
    (x5, y5), (x6, y6) = expected_xy(*PLANTED[5][:2]), expected_xy(*PLANTED[6][:2])
    assert (neck.x, neck.y, neck.score) == pytest.approx(((x5 + x6) / 2, (y5 + y6) / 2, 1.0), abs=1e-3)
    assert pose.body[15] is None      # COCO 1 (left eye) scored 0.2
    assert sum(k is not None for k in pose.body) == 5
    check(pose.face[0], 23)
    assert len(pose.face) == 70 and pose.face[68] is None and pose.face[69] is None
    check(pose.left_hand[0], 91)
    check(pose.left_hand[1], 92)
    check(pose.right_hand[0], 112)
    people = dwpose.pose_dicts(poses)
    assert people[0]["body"][0] == pytest.approx(expected_xy(*PLANTED[0][:2]), abs=1e-3)
    assert people[0]["body"][15] is None and people[0]["face"][69] is None


def test_dw_openpose_full_map(dw_root):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, IMAGE_HW + (3,), dtype=np.uint8)
    out = dwpose.dw_openpose_full(image, RES, 0.5, 0.5, folders=ModelFolders(dw_root))
    assert out.dtype == np.uint8 and out.shape == (256, 341, 3)
    nx, ny = expected_xy(*PLANTED[0][:2])
    assert tuple(out[int(ny), int(nx)]) == (255, 0, 0)           # nose joint colour
    hx, hy = expected_xy(*PLANTED[92][:2])
    assert tuple(out[int(hy), int(hx)]) == (0, 0, 255)           # hand joint
    fx, fy = expected_xy(*PLANTED[23][:2])
    assert tuple(out[int(fy), int(fx)]) == (255, 255, 255)       # face dot
    assert (out[:, 300:] == 0).all()                              # nothing else drawn


def test_dw_openpose_full_detect_answers_its_pose_json(dw_root):
    """/controlnet/detect's "poses" for dw_openpose_full: the same run's people, in pixels of the
    padded image, beside the same map."""
    from sdrt.control.detect import detect_with_pose

    image = np.random.default_rng(0).integers(0, 255, IMAGE_HW + (3,), dtype=np.uint8)
    control_map, pose = detect_with_pose("dw_openpose_full", image, RES, folders=ModelFolders(dw_root))
    assert np.array_equal(control_map, dwpose.dw_openpose_full(image, RES, 0.5, 0.5, folders=ModelFolders(dw_root)))
    person = pose["people"][0]
    nx, ny = expected_xy(*PLANTED[0][:2])
    assert person["pose_keypoints_2d"][:3] == pytest.approx([nx, ny, 1.0], abs=1e-3)
    assert len(person["face_keypoints_2d"]) == 70 * 3 and len(person["hand_left_keypoints_2d"]) == 21 * 3


def test_no_detection_gives_black_map(tmp_path):
    root = str(tmp_path)
    _save(constant_model([1, 3, 640, 640], {"output": np.zeros((1, 8400, 85), np.float32)}),
          root, "openpose", "yolox_l.onnx")
    sx, sy = pose_outputs()
    _save(constant_model([1, 3, 384, 288], {"simcc_x": sx, "simcc_y": sy}), root, "openpose", "dw-ll_ucoco_384.onnx")
    out = dwpose.dw_openpose_full(np.zeros((64, 96, 3), np.uint8), 128, 0, 0, folders=ModelFolders(root))
    assert out.shape == (128, 192, 3) and not out.any()


def test_dwpose_wrong_signature_and_missing_file(tmp_path):
    root = str(tmp_path)
    with pytest.raises(MissingAnnotatorError) as e:
        dwpose.dw_openpose_full(np.zeros((64, 64, 3), np.uint8), 64, 0, 0, folders=ModelFolders(root))
    assert "yolox_l.onnx" in str(e.value) and os.path.join("downloads", "openpose") in str(e.value)
    _save(constant_model([1, 3, 640, 640], {"output": detector_outputs()}), root, "openpose", "yolox_l.onnx")
    bad = constant_model([1, 3, 256, 192], {"simcc_x": np.zeros((1, 133, 384)), "simcc_y": np.zeros((1, 133, 512))})
    path = _save(bad, root, "openpose", "dw-ll_ucoco_384.onnx")
    with pytest.raises(_onnx.OnnxSignatureError) as e:
        dwpose.dw_openpose_full(np.zeros((64, 64, 3), np.uint8), 64, 0, 0, folders=ModelFolders(root))
    assert path in str(e.value) and "384, 288" in str(e.value)


# -- depth --------------------------------------------------------------------------------------

def mean_depth_model(channels=3, output_rank=4):
    """depth = mean over the input's channels, (1, 1, H, W) (or squeezed to (1, H, W))."""
    nodes = [helper.make_node("ReduceMean", ["input"], ["d4"], axes=[1], keepdims=1)]
    out_shape = [1, 1, "h", "w"]
    if output_rank == 3:
        nodes.append(helper.make_node("Squeeze", ["d4", "axis"], ["depth"]))
        out_shape = [1, "h", "w"]
    else:
        nodes.append(helper.make_node("Identity", ["d4"], ["depth"]))
    graph = helper.make_graph(
        nodes, "depth", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, channels, "h", "w"])],
        [helper.make_tensor_value_info("depth", TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(np.array([1], np.int64), "axis")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


@pytest.mark.parametrize("rank", [3, 4])
def test_depth_ramp_normalisation(tmp_path, rank):
    root = str(tmp_path)
    _save(mean_depth_model(output_rank=rank), root, "midas", "dpt_hybrid-midas-501f0c75.onnx")
    ramp = np.tile(np.linspace(40, 200, 150).astype(np.uint8)[None, :, None], (100, 1, 3))
    out = depth_onnx.depth(ramp, 128, 0, 0, folders=ModelFolders(root))
    assert out.dtype == np.uint8 and out.shape == (128, 192, 3)
    padded, unpad = resize_with_pad(ramp, 128)
    d = padded.astype(np.float32).mean(axis=2) / 127.5 - 1.0
    d -= d.min()
    expected = unpad((d / d.max() * 255.0).clip(0, 255).astype(np.uint8))
    assert np.abs(out[..., 0].astype(int) - expected).max() <= 1
    assert (out[..., 0] == out[..., 2]).all()
    assert out[:, 0, 0].max() <= 1 and out[:, -1, 0].min() >= 250    # dark -> 0, bright -> 255


def test_depth_generic_name_wrong_signature_and_missing(tmp_path):
    root = str(tmp_path)
    with pytest.raises(MissingAnnotatorError) as e:
        depth_onnx.depth(np.zeros((64, 64, 3), np.uint8), 64, 0, 0, folders=ModelFolders(root))
    assert "dpt_hybrid-midas-501f0c75.onnx" in str(e.value) and os.path.join("downloads", "midas") in str(e.value)
    path = _save(mean_depth_model(channels=1), root, "midas", "depth.onnx")
    with pytest.raises(_onnx.OnnxSignatureError) as e:
        depth_onnx.depth(np.zeros((64, 64, 3), np.uint8), 64, 0, 0, folders=ModelFolders(root))
    assert path in str(e.value) and "(1, 3, H, W)" in str(e.value)


def test_constant_depth_is_black(tmp_path):
    root = str(tmp_path)
    _save(mean_depth_model(), root, "midas", "depth.onnx")
    out = depth_onnx.depth(np.full((64, 64, 3), 90, np.uint8), 64, 0, 0, folders=ModelFolders(root))
    assert out.shape == (64, 64, 3) and not out.any()


# -- segmentation -------------------------------------------------------------------------------

CLASS_OF_CHANNEL = (5, 149, 20)   # red -> 5, green -> 149, blue -> 20


def seg_model(classes=150, labels=False):
    """1/4-resolution scores: class CLASS_OF_CHANNEL[c] = mean of channel c over 4x4 cells."""
    weight = np.zeros((classes, 3, 1, 1), np.float32)
    for c, k in enumerate(CLASS_OF_CHANNEL):
        if k < classes:
            weight[k, c] = 1.0
    nodes = [helper.make_node("AveragePool", ["input"], ["p"], kernel_shape=[4, 4], strides=[4, 4]),
             helper.make_node("Conv", ["p", "w"], ["scores"])]
    out = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, classes, "h4", "w4"])
    if labels:
        nodes.append(helper.make_node("ArgMax", ["scores"], ["labels"], axis=1, keepdims=0))
        out = helper.make_tensor_value_info("labels", TensorProto.INT64, [1, "h4", "w4"])
    image = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "h", "w"])
    graph = helper.make_graph(nodes, "seg", [image], [out], [numpy_helper.from_array(weight, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def stripes():
    image = np.zeros((120, 180, 3), np.uint8)
    image[:, :60, 0] = 255
    image[:, 60:120, 1] = 255
    image[:, 120:, 2] = 255
    return image


@pytest.mark.parametrize("run,subfolder,filename,labels", [
    (seg_onnx.oneformer_ade20k, "oneformer", "250_16_swin_l_oneformer_ade20k_160k.onnx", False),
    (seg_onnx.uniformer, "uniformer", "upernet_global_small.onnx", True),
    (seg_onnx.uniformer, "uniformer", "seg_ade20k.onnx", False),
])
def test_seg_classes_in_ade20k_colours(tmp_path, run, subfolder, filename, labels):
    root = str(tmp_path)
    _save(seg_model(labels=labels), root, subfolder, filename)
    out = run(stripes(), 256, 0, 0, folders=ModelFolders(root))
    assert out.dtype == np.uint8 and out.shape == (256, 384, 3)
    palette = seg_onnx.ADE20K_PALETTE
    assert tuple(out[128, 50]) == tuple(palette[5]) == (120, 120, 80)
    assert tuple(out[128, 190]) == tuple(palette[149]) == (92, 0, 255)
    assert tuple(out[128, 330]) == tuple(palette[20]) == (0, 102, 200)
    colours = {tuple(c) for c in out.reshape(-1, 3)}
    assert colours <= {tuple(palette[k]) for k in (0,) + CLASS_OF_CHANNEL}


def test_palette():
    p = seg_onnx.ADE20K_PALETTE
    assert p.shape == (150, 3) and p.dtype == np.uint8
    assert tuple(p[0]) == (120, 120, 120) and tuple(p[12]) == (150, 5, 61) and tuple(p[149]) == (92, 0, 255)


def test_seg_wrong_signature_and_missing(tmp_path):
    root = str(tmp_path)
    with pytest.raises(MissingAnnotatorError) as e:
        seg_onnx.oneformer_ade20k(np.zeros((64, 64, 3), np.uint8), 64, 0, 0, folders=ModelFolders(root))
    assert "250_16_swin_l_oneformer_ade20k_160k.onnx" in str(e.value)
    assert os.path.join("downloads", "oneformer") in str(e.value)
    path = _save(seg_model(classes=10), root, "oneformer", "seg_ade20k.onnx")
    with pytest.raises(_onnx.OnnxSignatureError) as e:
        seg_onnx.oneformer_ade20k(np.zeros((64, 64, 3), np.uint8), 64, 0, 0, folders=ModelFolders(root))
    assert path in str(e.value) and "150" in str(e.value)


def test_preprocessor_entries():
    entries = {p.name: p for m in (dwpose, depth_onnx, seg_onnx) for p in m.PREPROCESSORS}
    assert {(n, p.label, p.priority, p.tags) for n, p in entries.items()} == {
        ("dw_openpose_full", "dw_openpose_full", 0, ("OpenPose",)),
        ("depth", "depth_midas", 100, ("Depth",)),
        ("oneformer_ade20k", "seg_ofade20k", 100, ("Segmentation",)),
        ("segmentation", "seg_ufade20k", 0, ("Segmentation",)),
    }
