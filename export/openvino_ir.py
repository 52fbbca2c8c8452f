"""OpenVINO IR beside an ONNX export's graph (``to_onnx(..., openvino_ir=True)``).

The IR is converted from the same torch wrapper and sample inputs as the ONNX graph (specs), by
OpenVINO's PyTorch frontend rather than from the ONNX file: that frontend keeps torch's
scaled_dot_product_attention as one ScaledDotProductAttention op, which OpenVINO's CPU plugin runs
as a fused kernel, while the ONNX graph spells attention out as MatMul / Softmax / MatMul. Measured
on one SD 1.5 CFG UNet step at 512 px (bench/results/sd15_cpu_step-cpu.json): 13.55 s against
14.64 s from the ONNX graph. Input and output names, dims and dynamic axes are the spec's, so the
openvino backend reshapes and feeds either file the same way.
"""
from __future__ import annotations

import os

import torch

IR_FILE = "openvino.xml"  # its weights: openvino.bin beside it


def write_openvino_ir(pipe, spec, folder: str, *, fp16: bool) -> str:
    """`spec`'s component of `pipe` as folder/openvino.xml (+ .bin); returns the file's path. fp16
    stores the weights in fp16 (OpenVINO decompresses them at compile time)."""
    import openvino as ov

    from sdrt.backends.attention import attention_processors

    module = spec.wrap(pipe).eval().float()
    sample = spec.sample(pipe, torch.float32)
    shapes = [ov.PartialShape([-1 if isinstance(d, str) else d for d in t.dims]) for t in spec.inputs]
    unet = getattr(pipe, "unet", None) if spec.name.startswith("unet") else None
    # torch's own attention (SDPA) is what the frontend fuses; a UNet on attention="sdrt" converts SDPA here
    with attention_processors(unet, None), torch.no_grad():
        model = ov.convert_model(module, example_input=sample, input=shapes)
    for port, tensor in zip(model.inputs, spec.inputs):
        port.get_tensor().set_names({tensor.name})
    if len(model.outputs) != len(spec.outputs):
        raise RuntimeError(f"{spec.name}: OpenVINO's conversion gave {len(model.outputs)} outputs, the spec "
                           f"declares {len(spec.outputs)} ({', '.join(t.name for t in spec.outputs)})")
    for port, tensor in zip(model.outputs, spec.outputs):
        port.get_tensor().set_names({tensor.name})
    path = os.path.join(folder, IR_FILE)
    ov.save_model(model, path, compress_to_fp16=fp16)
    return path


def ir_parity_error(pipe, spec, path: str) -> float:
    """Max |OpenVINO - torch| over every output of the IR on fresh random sample inputs (fp32)."""
    import numpy as np
    import openvino as ov

    torch.manual_seed(1234)
    sample = spec.sample(pipe, torch.float32)
    with torch.no_grad():
        want = spec.wrap(pipe).eval().float()(*sample)
    want = want if isinstance(want, tuple) else (want,)
    compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = compiled({t.name: v.numpy() for t, v in zip(spec.inputs, sample)})
    return max(float(np.abs(got[compiled.output(t.name)] - w.numpy()).max()) for t, w in zip(spec.outputs, want))
