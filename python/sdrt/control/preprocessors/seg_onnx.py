"""oneformer_ade20k (seg_ofade20k) and segmentation (seg_ufade20k): ADE20K semantic segmentation
from an ONNX file the user exports, run on ONNX Runtime, coloured with the ADE20K palette.

Files (the extension's weight names with .onnx, in its subfolders):
- seg_ofade20k: <annotators>/oneformer/250_16_swin_l_oneformer_ade20k_160k.onnx (or seg_ade20k.onnx)
- seg_ufade20k: <annotators>/uniformer/upernet_global_small.onnx (or seg_ade20k.onnx)

Flow (the extension's `oneformer_ade20k` / `uniformer`): pad-resize to the resolution, the padded
RGB image through the network, per-class scores resized (linear) to the padded size, the arg-max
class of every pixel painted in its ADE20K colour (`ADE20K_PALETTE`, RGB, the same 150 triples
OneFormer's ADE20K metadata and mmseg's `ade_palette` give; both extension paths paint opaque
colours, alpha 1), unpadded. Label maps carry no anti-aliasing here; the extension's OneFormer path
draws through detectron2's Visualizer, whose mask edges can differ by a pixel.

What sdrt expects of the file (checked when it is loaded; a mismatch names the file):
- one input (the first), float32, (1, 3, H, W) NCHW, RGB, raw 0..255 values: the exported wrapper
  does the model's own normalisation / channel order (OneFormer: BGR with its pixel mean / std;
  UniFormer (mmseg): mean (123.675, 116.28, 103.53), std (58.395, 57.12, 57.375) on RGB). H and W
  should be dynamic (sdrt feeds the padded image, multiples of 64); a fixed-size file gets the
  image resized to its size (linear);
- one output (the first), either float scores (1, 150, H', W') (logits or probabilities over the
  150 ADE20K classes, any H', W'), or an integer label map (1, H', W') with values 0..149
  (resized nearest; other values are painted black).

Getting the file: sdrt never runs the .pth checkpoints. On your own machine, in the model's
official code (SHI-Labs/OneFormer with detectron2; or the UniFormer / mmseg 0.x segmentation
code), wrap the network so it maps the raw RGB batch to semantic scores, e.g. for OneFormer

    class Wrap(torch.nn.Module):
        def __init__(self, model): super().__init__(); self.model = model
        def forward(self, image):                       # (1, 3, H, W) RGB 0..255
            out = self.model([{"image": image[0].flip(0), "height": image.shape[2],
                               "width": image.shape[3], "task": "The task is semantic"}])
            return out[0]["sem_seg"][None]                # (1, 150, H, W)

    torch.onnx.export(Wrap(model).eval(), torch.zeros(1, 3, 512, 512), "seg_ade20k.onnx",
                      input_names=["image"], output_names=["scores"], opset_version=17,
                      dynamic_axes={"image": {2: "height", 3: "width"}, "scores": {2: "height", 3: "width"}})

(the task-token text encoder and post-processing of some models need tracing-friendly edits), and
copy the .onnx into the model's annotator folder."""
from __future__ import annotations

import numpy as np

from ..cv import cv2
from ..image_resize import resize_with_pad
from .base import Preprocessor
from ._onnx import IOSpec, OnnxSignatureError, find_file, fixed_hw, input_dtype, onnx_session

ONEFORMER = ("oneformer", ("250_16_swin_l_oneformer_ade20k_160k.onnx", "seg_ade20k.onnx"))
UNIFORMER = ("uniformer", ("upernet_global_small.onnx", "seg_ade20k.onnx"))
NUM_CLASSES = 150

ADE20K_PALETTE = np.array([
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80),
    (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7),
    (150, 5, 61), (120, 120, 70), (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4),
    (255, 51, 7), (204, 70, 3), (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255),
    (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220), (255, 9, 92), (112, 9, 255),
    (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10), (7, 255, 255),
    (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8), (0, 255, 20),
    (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255),
    (140, 140, 140), (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0),
    (153, 255, 0), (0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255),
    (11, 200, 200), (255, 82, 0), (0, 255, 245), (0, 61, 255), (0, 255, 112), (0, 255, 133),
    (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0), (0, 143, 255), (51, 255, 0),
    (0, 82, 255), (0, 255, 41), (0, 255, 173), (10, 0, 255), (173, 255, 0), (0, 255, 153),
    (255, 92, 0), (255, 0, 255), (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20),
    (255, 184, 184), (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194),
    (0, 255, 82), (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255), (0, 122, 255),
    (0, 255, 163), (255, 153, 0), (0, 255, 10), (255, 112, 0), (143, 255, 0), (82, 0, 255),
    (163, 255, 0), (255, 235, 0), (8, 184, 170), (133, 0, 255), (0, 255, 92), (184, 0, 255),
    (255, 0, 31), (0, 184, 255), (0, 214, 255), (255, 0, 112), (92, 255, 0), (0, 224, 255),
    (112, 224, 255), (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0), (255, 0, 163),
    (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235), (245, 0, 255),
    (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0), (0, 204, 255), (20, 0, 255),
    (255, 255, 0), (0, 153, 255), (0, 41, 255), (0, 255, 204), (41, 0, 255), (41, 255, 0),
    (173, 0, 255), (0, 245, 255), (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255),
    (184, 255, 0), (0, 133, 255), (255, 214, 0), (25, 194, 194), (102, 255, 0), (92, 0, 255),], dtype=np.uint8)

SEG_INPUT = IOSpec((4,), ((1, 3),), text="one float input (1, 3, H, W), RGB 0..255")
SEG_OUTPUT = IOSpec((3, 4), float_only=False,
                    text=f"a float output (1, {NUM_CLASSES}, H, W) of ADE20K class scores, or an integer "
                         f"label map (1, H, W)")


def _check_output(session, path: str) -> None:
    out = session.get_outputs()[0]
    integer = out.type.startswith("tensor(int") or out.type.startswith("tensor(uint")
    classes = out.shape[1] if len(out.shape) == 4 else None
    if (len(out.shape) == 4) == integer or (isinstance(classes, int) and classes > 0 and classes != NUM_CLASSES):
        raise OnnxSignatureError(f"{path}: output 0 ({out.name!r}) is {out.type} of shape {list(out.shape)}; "
                                 f"expected {SEG_OUTPUT.text}")


def segment(session, padded: np.ndarray) -> np.ndarray:
    """(H, W) int class labels of an (H, W, 3) uint8 RGB image at its size."""
    h, w = padded.shape[:2]
    arg = session.get_inputs()[0]
    fixed = fixed_hw(arg)
    image = padded if fixed is None or fixed == (h, w) else \
        cv2().resize(padded, (fixed[1], fixed[0]), interpolation=cv2().INTER_LINEAR)
    x = np.ascontiguousarray(image.transpose(2, 0, 1)[None]).astype(input_dtype(arg))
    out = np.asarray(session.run(None, {arg.name: x})[0])
    if out.ndim == 3:  # a label map
        labels = out[0].astype(np.int32)
        if labels.shape != (h, w):
            labels = cv2().resize(labels, (w, h), interpolation=cv2().INTER_NEAREST)
        return labels
    scores = out[0].astype(np.float32)  # (150, H', W')
    if scores.shape[1:] != (h, w):  # linear, 4 channels per cv2 call
        scores = np.concatenate([np.atleast_3d(cv2().resize(np.ascontiguousarray(scores[i:i + 4].transpose(1, 2, 0)),
                                                            (w, h), interpolation=cv2().INTER_LINEAR))
                                 for i in range(0, len(scores), 4)], axis=2).transpose(2, 0, 1)
    return scores.argmax(axis=0).astype(np.int32)


def colourise(labels: np.ndarray) -> np.ndarray:
    """(H, W) labels -> (H, W, 3) uint8 ADE20K colours; labels outside 0..149 are black."""
    lut = np.zeros((NUM_CLASSES + 1, 3), np.uint8)
    lut[:NUM_CLASSES] = ADE20K_PALETTE
    return lut[np.where((labels >= 0) & (labels < NUM_CLASSES), labels, NUM_CLASSES)]


def _run(where: tuple[str, tuple[str, ...]], image: np.ndarray, resolution: int, folders) -> np.ndarray:
    subfolder, filenames = where
    path = find_file(folders, subfolder, filenames)
    session = onnx_session(path, [SEG_INPUT], [SEG_OUTPUT])
    _check_output(session, path)
    padded, unpad = resize_with_pad(image, resolution)
    return unpad(colourise(segment(session, padded)))


def oneformer_ade20k(image: np.ndarray, resolution: int, a: float, b: float, rng=None, folders=None) -> np.ndarray:
    return _run(ONEFORMER, image, resolution, folders)


def uniformer(image: np.ndarray, resolution: int, a: float, b: float, rng=None, folders=None) -> np.ndarray:
    return _run(UNIFORMER, image, resolution, folders)


PREPROCESSORS: tuple[Preprocessor, ...] = (
    Preprocessor("oneformer_ade20k", "seg_ofade20k", oneformer_ade20k, priority=100, tags=("Segmentation",)),
    Preprocessor("segmentation", "seg_ufade20k", uniformer, tags=("Segmentation",)),
)
