"""Train toy-XL on the toy world: an SDXL-architecture UNet and its second text encoder, on the
toy's VAE latents and its (frozen, shared) CLIP-L.

Conditioning is SDXL's (sdrt.models.sdxl_text): both encoders' penultimate hidden states
concatenated, the second encoder's projected pooled output, and the six size / crop ids
(original (h, w), crop (top, left), target (h, w)) of the picture. Dropped captions (10%) zero the
text embeddings and the pooled vector, which is what an empty negative prompt gives at inference
(sgm's ucg, A1111's zeroed negative). Loss: noise prediction (Ho et al. 2020, eq. 14) with EMA.
Writes a diffusers-layout folder with unet/, text_encoder_2/, scheduler/ and
``shared_components.json`` naming the toy's text_encoder/ and vae/, so the shipped size stays small.

    python -m sdrt.toy.train_xl --out /tmp/toy_xl --steps 4000 --threads 1
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

from ..models import toy as toy_config
from ..models import toy_xl
from ..models.sdxl_text import penultimate_and_pooled
from ..prompt.chunking import pad_after_eos
from ..prompt.sdxl import OPEN_CLIP_PAD
from .train import (ImagePool, Progress, cpu_machine, encode_dataset, lr_at, save_fp16, step_with_ema,
                    zero_unused_token_rows)

SHARED = {"text_encoder": "text_encoder", "vae": "vae"}  # taken from the toy model's folder


def time_ids(batch: int, height: int, width: int) -> torch.Tensor:
    """SDXL's added time ids for uncropped pictures: (h, w, 0, 0, h, w)."""
    return torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32).expand(batch, -1)


def condition(text_encoder, text_encoder_2, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(context, pooled) for EOS-padded caption ids, as the SDXL conditioning computes them."""
    with torch.no_grad():
        first, _ = penultimate_and_pooled(text_encoder, ids, pooled=False)
    second, pooled = penultimate_and_pooled(text_encoder_2, pad_after_eos(ids, OPEN_CLIP_PAD), pooled=True)
    return torch.cat([first, second], dim=-1), pooled


def train(unet, text_encoder, text_encoder_2, dataset: dict, *, steps: int, batch: int, lr: float, seed: int,
          scaling_factor: float, cond_dropout: float = 0.1, ema_decay: float = 0.999) -> tuple:
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(**{k: v for k, v in toy_config.SCHEDULER_CONFIG.items() if k != "timestep_spacing"})
    params = list(unet.parameters()) + list(text_encoder_2.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    ema = copy.deepcopy(unet).requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    n, shape = dataset["mean"].shape[0], (batch, *dataset["mean"].shape[1:])
    size = dataset["mean"].shape[-1] * 8
    ids_time = time_ids(batch, size, size)
    progress = Progress("toy-XL unet+text_encoder_2", steps)
    unet.train()
    text_encoder_2.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup=200)
        idx = torch.randint(0, n, (batch,), generator=g)
        z0 = (dataset["mean"][idx] + dataset["std"][idx] * torch.randn(shape, generator=g)) * scaling_factor
        keep = (torch.rand(batch, generator=g) >= cond_dropout).float()
        noise = torch.randn(shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (batch,), generator=g)
        context, pooled = condition(text_encoder, text_encoder_2, dataset["ids"][idx])
        context, pooled = context * keep[:, None, None], pooled * keep[:, None]
        pred = unet(sched.add_noise(z0, noise, t), t, context,
                    added_cond_kwargs={"text_embeds": pooled, "time_ids": ids_time}).sample
        loss = F.mse_loss(pred, noise)
        step_with_ema(opt, loss, params, ema, unet, step, ema_decay)
        progress.update(step, loss.detach())
    ema.eval()
    text_encoder_2.eval()
    return ema, {"steps": steps, "batch": batch, "lr": lr, "seed": seed, "cond_dropout": cond_dropout,
                 "ema_decay": ema_decay, "seconds": round(progress.seconds, 1), "loss_history": progress.history}


def save_folder(out: str, unet, text_encoder_2, record: dict) -> None:
    """unet/, text_encoder_2/ (fp16 safetensors), scheduler/, model_index.json (diffusers'
    StableDiffusionXLPipeline) and shared_components.json (the toy's text_encoder and vae)."""
    import diffusers
    from diffusers import EulerDiscreteScheduler

    save_fp16(out, {"unet": unet, "text_encoder_2": text_encoder_2})
    EulerDiscreteScheduler(**toy_config.SCHEDULER_CONFIG).save_pretrained(os.path.join(out, "scheduler"))
    index = {
        "_class_name": "StableDiffusionXLPipeline", "_diffusers_version": diffusers.__version__,
        "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "force_zeros_for_empty_prompt": True,
    }
    with open(os.path.join(out, "model_index.json"), "w", encoding="utf-8") as f:
        json.dump(index, f, indent=2)
    with open(os.path.join(out, "shared_components.json"), "w", encoding="utf-8") as f:
        json.dump({name: os.path.join("..", "weights", sub) for name, sub in SHARED.items()}, f, indent=2)
    with open(os.path.join(out, "toy_training.json"), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)


def main(argv: list[str] | None = None) -> int:
    from ..loading import load_components, toy_model_path
    from ..prompt import get_tokenizer

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--resume", default=None, help="a toy-XL folder to continue from")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dataset-size", type=int, default=30000)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    _, text_encoder, vae = load_components(toy_model_path(), torch.float32)
    text_encoder.requires_grad_(False).eval()
    previous = None
    if args.resume:
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModelWithProjection

        unet = UNet2DConditionModel.from_pretrained(os.path.join(args.resume, "unet"), torch_dtype=torch.float32)
        text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(os.path.join(args.resume, "text_encoder_2"),
                                                                     torch_dtype=torch.float32)
        with open(os.path.join(args.resume, "toy_training.json"), encoding="utf-8") as f:
            previous = json.load(f)
    else:
        text_encoder_2, unet = toy_xl.build_components(args.seed)
    tokenizer = get_tokenizer()
    with torch.no_grad():
        dataset = encode_dataset(vae, tokenizer, ImagePool(args.seed + 1, args.dataset_size, torch.device("cpu"), 1))
    print(f"encoded {args.dataset_size} pictures in {time.perf_counter() - started:.0f}s", flush=True)
    ema, record = train(unet, text_encoder, text_encoder_2, dataset, steps=args.steps, batch=args.batch, lr=args.lr,
                        seed=args.seed + 2, scaling_factor=float(vae.config.scaling_factor))
    empty = tokenizer("", padding="max_length", max_length=77, return_tensors="pt").input_ids[0]
    # id 0 too: OpenCLIP's padding after the first EOS (pad_after_eos), trained like any token
    used = zero_unused_token_rows(text_encoder_2, torch.cat([dataset["ids"].flatten(), empty,
                                                             torch.tensor([OPEN_CLIP_PAD])]))
    save_folder(args.out, ema, text_encoder_2, {
        "command": "python -m sdrt.toy.train_xl " + " ".join(argv if argv is not None else sys.argv[1:]),
        "seed": args.seed, "dataset_size": args.dataset_size, "used_token_rows": used, "resumed_from": previous,
        "scaling_factor": float(vae.config.scaling_factor), "unet_and_text_encoder_2": record,
        "total_seconds": round(time.perf_counter() - started, 1), "machine": cpu_machine()})
    print(f"wrote {args.out} in {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
