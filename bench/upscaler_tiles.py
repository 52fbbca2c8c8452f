"""Upscaler tiles per second, torch eager vs ONNX Runtime (CPU EP), same tiles, same thread budget.

Models: the shipped toy upscaler (2x RRDBNet, 2 blocks, 32 features) and a RealESRGAN_x4plus-sized
RRDBNet (23 blocks, 64 features, random weights: the speed does not depend on the values), each
on one (1, 3, tile, tile) tile, fp32. Ratio = torch time / ORT time (> 1: ORT faster). The
alternating timer of bench/timer.py; a timing is never a test assertion.

    python bench/upscaler_tiles.py [--tile 192] [--repeats 3] [--out bench/results/upscaler_tiles-cpu.json]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timer import machine_description, time_pair, write_results  # noqa: E402


def _models():
    from sdrt.postprocess import RRDBNet, load_upscaler_file
    from sdrt.toy.train_upscaler import toy_upscaler_path

    torch.manual_seed(0)
    x4plus = RRDBNet(num_block=23).eval().requires_grad_(False)
    x4plus.layout = "RRDBNet"
    return {"toy upscaler (2x, 2 blocks, 32 feat)": load_upscaler_file(toy_upscaler_path()),
            "RealESRGAN_x4plus-sized (4x, 23 blocks, random)": x4plus}


def _row(name, model, tile, repeats, folder):
    from sdrt.postprocess import export_upscaler_onnx, load_upscaler_file

    path = export_upscaler_onnx(model, os.path.join(folder, f"{len(os.listdir(folder))}.onnx"))
    onnx_model = load_upscaler_file(path)
    x = torch.rand(1, 3, tile, tile, generator=torch.Generator().manual_seed(0))

    def run_torch():
        with torch.no_grad():
            return model(x)

    err = (run_torch() - onnx_model(x)).abs().max().item()
    t_torch, t_ort = time_pair(run_torch, lambda: onnx_model(x), warmup=1, repeats=repeats, min_time_s=0.0)
    row = {"model": name, "tile": f"1x3x{tile}x{tile}", "scale": model.scale,
           "torch": t_torch, "onnxruntime": t_ort,
           "torch_tiles_per_s": round(1 / t_torch.median_s, 3), "ort_tiles_per_s": round(1 / t_ort.median_s, 3),
           "ratio_torch_over_ort": round(t_torch.median_s / t_ort.median_s, 3), "max_abs_diff": err}
    print(f"{name:<50}{row['torch_tiles_per_s']:>10.3f}{row['ort_tiles_per_s']:>10.3f}"
          f"{row['ratio_torch_over_ort']:>8.2f}", flush=True)
    return row


def main() -> int:
    import onnxruntime as ort

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tile", type=int, default=192)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                 "upscaler_tiles-cpu.json"))
    args = p.parse_args()
    load_before = os.getloadavg()  # the dev machine is shared: record how busy it was
    print(f"{'model':<50}{'torch/s':>10}{'ORT/s':>10}{'ratio':>8}")
    with tempfile.TemporaryDirectory() as folder:
        rows = [_row(name, model, args.tile, args.repeats, folder) for name, model in _models().items()]
    write_results(args.out, {"benchmark": "upscaler_tiles", "unit": "tiles per second (one tile per call)",
                             "baseline": "torch eager, same process, same threads", "onnxruntime": ort.__version__,
                             "machine": machine_description(), "load_average_before": load_before,
                             "load_average_after": os.getloadavg(), "results": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
