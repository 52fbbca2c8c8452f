"""sdrt's CPU paths as candidates of ../shared/baselines/sd15_cpu_step.py (one SD1.5 CFG UNet step at
512x512 against diffusers eager fp32 and plain OpenVINO on a static-shape ONNX export):

  python ../shared/baselines/sd15_cpu_step.py WORKDIR --candidate bench.sd15_cpu_candidates:NAME

Each NAME(unet, workdir) returns step(x, t, ctx) -> noise prediction, built from the baseline's own
diffusers UNet, and first writes WORKDIR/numerics-NAME.json: the candidate's relative L2 error
against the fp32 UNet on one CFG call (issue 18 allows 2%).
  openvino_sdrt_export  what `--backend openvino` runs: sdrt's ONNX export (dynamic axes, export
                        specs), reshaped by the backend to the call's static shapes
  openvino_ir           the torch UNet converted by OpenVINO's PyTorch frontend (ov.convert_model),
                        which keeps attention as one ScaledDotProductAttention op; static shapes
  openvino_sdrt_ir      what `sdrt export --openvino-ir` + `--backend openvino` run: that IR written by
                        sdrt's exporter with the specs' dynamic axes, reshaped by the backend per call
  torch_bf16            the torch backend's bf16 option (diffusers' UNet in bf16, SDPA)
  torch_sdrt_attention  the torch backend with attention="sdrt" (sdrt's fused CPU kernel), fp32: does
                        the op pay for itself inside a whole UNet?
  torch_compile         the torch backend's compile="default" (TorchInductor's C++ kernels, static
                        shapes, channels_last), fp32; compiles in the numerics call before timing
Run one candidate per process (each holds another copy of the UNet; the machine has 24 GB).
"""
from __future__ import annotations

import copy
import json
import os
import sys
from types import SimpleNamespace

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # export/


def _inputs():
    g = torch.Generator().manual_seed(1234)
    return torch.randn(2, 4, 64, 64, generator=g), torch.tensor([500.0, 500.0]), torch.randn(2, 77, 768, generator=g)


def _checked(name: str, unet, workdir: str, step):
    """Record the candidate's relative L2 error against the fp32 UNet; return `step`."""
    x, t, ctx = _inputs()
    with torch.no_grad():
        want = unet(x, t, ctx).sample
        got = step(x, t, ctx).float()
    error = float((got - want).norm() / want.norm())
    with open(os.path.join(workdir, f"numerics-{name}.json"), "w", encoding="utf-8") as f:
        json.dump({"candidate": name, "relative_l2_vs_fp32": error}, f)
    print(f"{name}: relative L2 vs torch fp32 {error:.2e}")
    return step


def openvino_sdrt_export(unet, workdir):
    from export.onnx_export import export_component
    from sdrt.backends.openvino_backend import OpenVinoBackend

    out = os.path.join(workdir, "sdrt_onnx")
    if not os.path.isfile(os.path.join(out, "unet", "model.onnx")):
        export_component(SimpleNamespace(unet=unet), "unet", os.path.join(out, "unet", "model.onnx"))
    backend = OpenVinoBackend(out, manifest={"components": {"unet": {"file": "unet/model.onnx"}}})
    return _checked("openvino_sdrt_export", unet, workdir, lambda x, t, ctx: backend.unet_forward(x, t, ctx))


def openvino_sdrt_ir(unet, workdir):
    from export.openvino_ir import write_openvino_ir
    from export.specs import COMPONENTS
    from sdrt.backends.openvino_backend import OpenVinoBackend

    out = os.path.join(workdir, "sdrt_ir_dynamic")
    if not os.path.isfile(os.path.join(out, "unet", "openvino.xml")):
        os.makedirs(os.path.join(out, "unet"), exist_ok=True)
        write_openvino_ir(SimpleNamespace(unet=unet), COMPONENTS["unet"], os.path.join(out, "unet"), fp16=False)
    backend = OpenVinoBackend(out, manifest={"components": {"unet": {"file": "unet/openvino.xml"}}})
    return _checked("openvino_sdrt_ir", unet, workdir, lambda x, t, ctx: backend.unet_forward(x, t, ctx))


def openvino_ir(unet, workdir):
    import openvino as ov

    from export.specs import UNetForExport
    from sdrt.backends.openvino_backend import inference_precision

    path = os.path.join(workdir, "sdrt_ir", "unet.xml")
    core = ov.Core()
    if not os.path.isfile(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        x, t, ctx = _inputs()
        with torch.no_grad():
            model = ov.convert_model(UNetForExport(unet), example_input=(x, t, ctx),
                                     input=[tuple(x.shape), tuple(t.shape), tuple(ctx.shape)])
        ov.save_model(model, path, compress_to_fp16=False)
        del model
    compiled = core.compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": inference_precision(core, None),
                                                "PERFORMANCE_HINT": "LATENCY"})

    def step(x, t, ctx):
        return torch.from_numpy(compiled((x.numpy(), t.numpy(), ctx.numpy()))[0])
    return _checked("openvino_ir", unet, workdir, step)


def torch_bf16(unet, workdir):
    bf16 = copy.deepcopy(unet).to(torch.bfloat16)  # the baseline keeps its fp32 UNet
    return _checked("torch_bf16", unet, workdir,
                    lambda x, t, ctx: bf16(x.bfloat16(), t, ctx.bfloat16()).sample.float())


def torch_sdrt_attention(unet, workdir):
    from sdrt.backends.attention import set_attention

    fused = copy.deepcopy(unet)
    set_attention(fused, "sdrt")
    return _checked("torch_sdrt_attention", unet, workdir, lambda x, t, ctx: fused(x, t, ctx).sample)


def torch_compile(unet, workdir):
    from sdrt.backends.compiled_unet import compile_unet

    compiled = compile_unet(copy.deepcopy(unet), "default", torch.device("cpu"))
    return _checked("torch_compile", unet, workdir, lambda x, t, ctx: compiled(x, t, ctx).sample)
