"""SDXL sampling speed: sdrt's pipeline against diffusers' StableDiffusionXLPipeline on the same
full-size SDXL modules (random weights), in one process, runs alternating.

it/s is A1111's: sampler steps per second of the sampling loop (both with CFG, so two UNet rows per
step), timed from the first to the last step callback, so text encoding and the VAE are left out.
GPU (bench/gpu_suite.sh): 1024x1024, fp16, Euler, 20 steps. CPU: a reduced size and few steps (the
2-core development box takes ~30 s per SDXL step at 512 px in fp32).

    python bench/bench_sdxl.py --device cuda --size 1024 --steps 20 --out bench/results/sdxl-cuda.json
    python bench/bench_sdxl.py --device cpu --size 512 --steps 3 --repeats 2 --out bench/results/sdxl-cpu.json
    python bench/bench_sdxl.py --unet-onnx --size 512 --repeats 3 --out bench/results/sdxl-unet-onnx-cpu.json
    python bench/bench_sdxl.py --tiny ...   (a tiny SDXL: checks the script, measures nothing useful)

--unet-onnx: one CFG UNet step (batch 2, 77 tokens, SDXL's added inputs), torch eager fp32 against the
same UNet exported by sdrt (TorchScript exporter, fp32) on ONNX Runtime's CPU provider, alternating.
The export of the full-size UNet (10 GB of fp32 weights) needs about 40 GB of memory.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pipeline_runs import diffusers_its, euler_scheduler, sdrt_its  # noqa: E402
from timer import machine_description, write_results  # noqa: E402


def random_sdxl(device: str, dtype: torch.dtype, tiny: bool):
    """SDXL base modules with random weights: (unet, text_encoder, text_encoder_2, vae)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from sdrt.models.architectures import ARCHITECTURES

    arch = ARCHITECTURES["sdxl"]
    if tiny:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "sdxl"))
        from tiny_sdxl import tiny_sdxl_architecture

        arch = tiny_sdxl_architecture()
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**arch.unet)
        te1 = CLIPTextModel(CLIPTextConfig(**arch.text_encoders["text_encoder"]))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**arch.text_encoders["text_encoder_2"]))
        vae = AutoencoderKL(**arch.vae)
    return [m.to(dtype).eval().requires_grad_(False) for m in (unet, te1, te2, vae)]


def sdrt_pipeline(modules, device: str, dtype: torch.dtype):
    from sdrt.backends.torch_backend import TorchBackend
    from sdrt.models.architectures import SCHEDULER
    from sdrt.pipelines import ModelInfo, Pipeline
    from sdrt.pipelines.sdxl import time_id_count
    from sdrt.prompt import get_tokenizer
    from sdrt.sampling.schedules import betas_from_config, discrete_sigmas

    unet, te1, te2, vae = modules
    backend = TorchBackend(unet, te1, vae, text_encoder_2=te2, device=device, dtype=dtype)
    info = ModelInfo(name="sdxl-random", scaling_factor=float(vae.config.scaling_factor),
                     default_size=int(unet.config.sample_size) * 8, family="sdxl",
                     added_time_ids=time_id_count(unet.config, int(te2.config.projection_dim)))
    return Pipeline(backend, get_tokenizer(), discrete_sigmas(betas_from_config(SCHEDULER)), info,
                    batch_invariant=False)


def diffusers_pipeline(modules):
    from diffusers import StableDiffusionXLPipeline

    from sdrt.prompt import get_tokenizer
    from sdrt.prompt.tokenizer import make_tokenizer

    unet, te1, te2, vae = modules
    tokenizer_2 = make_tokenizer(pad_token="!")  # OpenCLIP's padding, as diffusers' SDXL tokenizer_2
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=get_tokenizer(),
                                     tokenizer_2=tokenizer_2, unet=unet, scheduler=euler_scheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def unet_step_vs_onnx(modules, size: int, repeats: int) -> dict:
    """Seconds per CFG UNet step, torch eager vs ONNX Runtime (CPU), on the same weights."""
    import tempfile
    import types

    import numpy as np
    import onnxruntime as ort

    from sdrt.export.onnx_export import export_component
    from timer import time_pair

    unet, _, te2, _ = modules
    unet.register_to_config(sample_size=size // 8)  # traced at the benchmark's latent size
    g = torch.Generator().manual_seed(0)
    feed = {"sample": torch.randn(2, 4, size // 8, size // 8, generator=g), "timestep": torch.tensor([500.0, 500.0]),
            "encoder_hidden_states": torch.randn(2, 77, unet.config.cross_attention_dim, generator=g),
            "text_embeds": torch.randn(2, te2.config.projection_dim, generator=g),
            "time_ids": torch.tensor([[size, size, 0, 0, size, size]] * 2, dtype=torch.float32)}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "unet", "model.onnx")
        started = time.perf_counter()
        export_component(types.SimpleNamespace(unet=unet, text_encoder_2=te2,
                                               info=types.SimpleNamespace(added_time_ids=6)), "unet", path)
        export_s = time.perf_counter() - started
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        numpy_feed = {k: v.numpy() for k, v in feed.items()}
        added = {"text_embeds": feed["text_embeds"], "time_ids": feed["time_ids"]}

        def eager():
            with torch.no_grad():
                return unet(feed["sample"], feed["timestep"], feed["encoder_hidden_states"],
                            added_cond_kwargs=added).sample
        got = session.run(None, numpy_feed)[0]
        err = float(np.abs(got - eager().numpy()).max() / np.abs(got).max())
        t_torch, t_ort = time_pair(eager, lambda: session.run(None, numpy_feed), warmup=1, repeats=repeats,
                                   min_time_s=0.0)
    print(f"SDXL UNet step at {size}px (CFG batch 2): torch {t_torch.median_s:.3f} s, ONNX Runtime "
          f"{t_ort.median_s:.3f} s, ratio torch/ORT {t_torch.median_s / t_ort.median_s:.2f} (max rel. error {err:.1e})")
    return {"torch": t_torch, "onnxruntime": t_ort, "ratio_torch_over_ort": t_torch.median_s / t_ort.median_s,
            "max_relative_error": err, "export_seconds": export_s}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--tiny", action="store_true", help="a tiny random SDXL (to check the script)")
    p.add_argument("--unet-onnx", action="store_true", help="a UNet step: torch eager vs ONNX Runtime (CPU)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    modules = random_sdxl(args.device, dtype, args.tiny)
    if args.unet_onnx:
        result = unet_step_vs_onnx(modules, args.size, args.repeats)
        if args.out:
            write_results(args.out, {"benchmark": "sdxl unet step, torch eager vs onnxruntime cpu", "size": args.size,
                                     "tiny": args.tiny, "results": result, "machine": machine_description()})
        return 0
    ours, theirs = sdrt_pipeline(modules, args.device, dtype), diffusers_pipeline(modules)
    sdrt_its(ours, args.size, 2, sync), diffusers_its(theirs, args.size, 2, sync)  # warm-up
    samples = {"sdrt": [], "diffusers": []}
    for _ in range(args.repeats):
        samples["sdrt"].append(sdrt_its(ours, args.size, args.steps, sync))
        samples["diffusers"].append(diffusers_its(theirs, args.size, args.steps, sync))
    result = {name: {"it_per_s_median": statistics.median(v), "samples": v} for name, v in samples.items()}
    ratio = result["sdrt"]["it_per_s_median"] / result["diffusers"]["it_per_s_median"]
    print(f"SDXL {'tiny' if args.tiny else 'full-size'} {args.size}px {dtype} on {args.device}: "
          f"sdrt {result['sdrt']['it_per_s_median']:.3f} it/s, diffusers {result['diffusers']['it_per_s_median']:.3f} "
          f"it/s, ratio {ratio:.3f}")
    if args.out:
        write_results(args.out, {"benchmark": "sdxl sampling it/s, Euler, CFG 7", "size": args.size,
                                 "steps": args.steps, "dtype": str(dtype), "device": args.device, "tiny": args.tiny,
                                 "results": result, "ratio_sdrt_over_diffusers": ratio,
                                 "machine": machine_description()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
