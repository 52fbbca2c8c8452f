"""Per-component latency, torch eager vs ONNX Runtime (CPU EP), on the same inputs, fp32.

Components: the toy model's text encoder, UNet (batch 2 = CFG) and VAE decoder at its native
64x64, and a full-size SD 1.5 UNet (random weights) at reduced latent sizes (SD 1.5 shapes; the
CPU cannot run 64x64 latents in a benchmark's time). Ratio = torch time / ORT time (> 1: ORT is
faster). Run:  python bench/bench_onnx_components.py [--sd15-latents 16 32] [--out FILE]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import types

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timer import machine_description, time_pair, write_results  # noqa: E402


def _pair(module, session, inputs: dict[str, torch.Tensor]):
    feed = {k: v.numpy() for k, v in inputs.items()}
    args = tuple(inputs.values())

    def run_torch():
        with torch.no_grad():
            return module(*args)
    return run_torch, lambda: session.run(None, feed)


def _row(name, shape, run_torch, run_ort, repeats):
    t_torch, t_ort = time_pair(run_torch, run_ort, warmup=2, repeats=repeats)
    ratio = t_torch.median_s / t_ort.median_s
    print(f"{name:<26}{shape:<26}{t_torch.median_s * 1e3:>10.2f}{t_ort.median_s * 1e3:>10.2f}{ratio:>8.2f}")
    return {"component": name, "inputs": shape, "torch": t_torch, "onnxruntime": t_ort,
            "ratio_torch_over_ort": round(ratio, 3)}


def main() -> int:
    import onnxruntime as ort

    import sdrt
    from sdrt.export.onnx_export import export_component
    from sdrt.export.specs import COMPONENTS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sd15-latents", nargs="*", type=int, default=[16, 32])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                 "onnx_components-cpu.json"))
    args = p.parse_args()
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the same thread budget on both sides
    rows = []
    print(f"{'component':<26}{'inputs':<26}{'torch ms':>10}{'ORT ms':>10}{'ratio':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        pipe = sdrt.load("toy")
        for name in ("text_encoder", "unet", "vae_decoder"):
            spec = COMPONENTS[name]
            path = os.path.join(tmp, name, "model.onnx")
            export_component(pipe, name, path)
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            inputs = dict(zip((t.name for t in spec.inputs), spec.sample(pipe, torch.float32)))
            shape = "x".join(str(d) for d in next(iter(inputs.values())).shape)
            rows.append(_row(f"toy {name}", shape, *_pair(spec.wrap(pipe).eval(), session, inputs), args.repeats))
        if args.sd15_latents:
            from diffusers import UNet2DConditionModel

            from sdrt.models.architectures import ARCHITECTURES

            torch.manual_seed(0)
            unet = UNet2DConditionModel(**{**ARCHITECTURES["sd1"].unet, "sample_size": 8}).eval()
            path = os.path.join(tmp, "sd15", "model.onnx")
            export_component(types.SimpleNamespace(unet=unet), "unet", path)
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            module = COMPONENTS["unet"].wrap(types.SimpleNamespace(unet=unet)).eval()
            for side in args.sd15_latents:
                inputs = {"sample": torch.randn(2, 4, side, side), "timestep": torch.tensor([500.0, 500.0]),
                          "encoder_hidden_states": torch.randn(2, 77, 768)}
                rows.append(_row("SD1.5 unet (random)", f"2x4x{side}x{side}", *_pair(module, session, inputs),
                                 max(3, args.repeats // 3)))
    write_results(args.out, {"benchmark": "onnx_components", "baseline": "torch eager, same process, same threads",
                             "onnxruntime": ort.__version__, "machine": machine_description(), "results": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
