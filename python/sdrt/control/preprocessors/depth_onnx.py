"""depth (label depth_midas): MiDaS depth from an ONNX file the user exports, run on ONNX Runtime.

File: <annotators>/midas/dpt_hybrid-midas-501f0c75.onnx (the extension's weight name with .onnx),
or <annotators>/midas/depth.onnx for any other MiDaS-style model.

Flow (the extension's `midas`): pad-resize to the resolution (short side, edges replicated to
multiples of 64), RGB scaled to [-1, 1] (x / 127.5 - 1, DPT-Hybrid's mean 0.5 / std 0.5), the
whole padded image through the network at its own size (no 384 resize), then the relative
inverse depth d -> (d - min) / max(d - min), x255, clipped and truncated to uint8, unpadded and
repeated to 3 channels. A constant prediction gives an all-black map.

What sdrt expects of the file (checked when it is loaded; a mismatch names the file):
- one input, float32, (1, 3, H, W) NCHW RGB in [-1, 1]. H and W should be dynamic (the extension
  feeds the padded image at its own size, multiples of 64); a file exported with fixed H, W gets
  the image resized to that size (cubic) and its prediction resized back (linear), which is not
  the extension's behaviour;
- one output (the first is used), float32, (1, H', W') or (1, 1, H', W') relative inverse depth
  (near = large); H', W' other than H, W are resized (linear) to the input size.

Getting the file: sdrt never runs the .pt checkpoints of this model. On your own machine, with the
official MiDaS repository (isl-org/MiDaS, v3: `midas.dpt_depth.DPTDepthModel(path=
"dpt_hybrid-midas-501f0c75.pt", backbone="vitb_rn50_384", non_negative=True)`), export it:

    model.eval()
    x = torch.zeros(1, 3, 512, 512)
    torch.onnx.export(model, x, "dpt_hybrid-midas-501f0c75.onnx", input_names=["image"],
                      output_names=["depth"], opset_version=17, dynamic_axes={
                          "image": {2: "height", 3: "width"}, "depth": {1: "height", 2: "width"}})

and copy the .onnx into the "midas" annotator folder. DPT's position-embedding resize follows
the input size when the export keeps H and W dynamic; check the export on a non-square image.
"""
from __future__ import annotations

import numpy as np

from ..cv import cv2
from ..image_resize import hwc3, resize_with_pad
from ._onnx import IOSpec, find_file, fixed_hw, input_dtype, onnx_session
from .base import Preprocessor

SUBFOLDER = "midas"
FILENAMES = ("dpt_hybrid-midas-501f0c75.onnx", "depth.onnx")


DEPTH_INPUT = IOSpec((4,), ((1, 3),), text="one float input (1, 3, H, W), RGB scaled to [-1, 1]")
DEPTH_OUTPUT = IOSpec((3, 4), text="a float output (1, H, W) or (1, 1, H, W): relative inverse depth")


def predict_depth(session, padded: np.ndarray) -> np.ndarray:
    """(H, W) float32 prediction of the network for an (H, W, 3) uint8 RGB image at its size."""
    h, w = padded.shape[:2]
    arg = session.get_inputs()[0]
    fixed = fixed_hw(arg)
    image = padded if fixed is None or fixed == (h, w) else \
        cv2().resize(padded, (fixed[1], fixed[0]), interpolation=cv2().INTER_CUBIC)
    x = image.astype(np.float32) / 127.5 - 1.0
    x = np.ascontiguousarray(x.transpose(2, 0, 1)[None]).astype(input_dtype(arg))
    out = np.asarray(session.run(None, {arg.name: x})[0], dtype=np.float32)
    depth = out.reshape(out.shape[-2:])  # (1, H', W') / (1, 1, H', W')
    if depth.shape != (h, w):
        depth = cv2().resize(depth, (w, h), interpolation=cv2().INTER_LINEAR)
    return depth


def depth_to_uint8(depth: np.ndarray) -> np.ndarray:
    """The extension's depth map: d - min, divided by its max, x255, clipped, truncated to uint8."""
    d = depth.astype(np.float32) - np.float32(depth.min())
    top = np.float32(d.max())
    if not top > 0:
        return np.zeros(d.shape, np.uint8)
    return np.clip(d / top * np.float32(255.0), 0, 255).astype(np.uint8)


def depth(image: np.ndarray, resolution: int, a: float, b: float, rng=None, folders=None) -> np.ndarray:
    session = onnx_session(find_file(folders, SUBFOLDER, FILENAMES), [DEPTH_INPUT], [DEPTH_OUTPUT])
    padded, unpad = resize_with_pad(image, resolution)
    return hwc3(unpad(depth_to_uint8(predict_depth(session, padded))))


PREPROCESSORS: tuple[Preprocessor, ...] = (
    Preprocessor("depth", "depth_midas", depth, priority=100, tags=("Depth",)),
)
