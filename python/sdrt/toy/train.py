"""Train the toy model family on the toy world, on CPU, reproducibly from a seed.

    python -m sdrt.toy.train --out python/sdrt/toy/weights --seed 0

Phases: (1) AutoencoderKL on rendered images (L1 reconstruction + KL, as the LDM first stage of
Rombach et al. 2022 minus the perceptual/GAN terms, which flat shapes do not need); (2) the latent
scaling factor measured as 1 / std of posterior samples (how SD's 0.18215 was chosen); (3) the
UNet and the CLIP text encoder jointly on the epsilon-prediction objective (Ho et al. 2020) with the
SD1.x scaled-linear schedule, 10% caption dropout for classifier-free guidance, and an EMA of the
UNet weights. Writes a diffusers-layout folder (model_index.json, vae/, text_encoder/, tokenizer/,
unet/, scheduler/) with fp16 safetensors, plus toy_training.json recording how it was made.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import sys
import time
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from . import data
from ..models import toy as toy_config


def _log(msg: str) -> None:
    print(msg, flush=True)


class Progress:
    """Prints step, smoothed loss, elapsed time and ETA every `every` steps."""

    def __init__(self, name: str, total: int, log: Callable[[str], None] = _log):
        self.name, self.total, self.log = name, total, log
        self.every = max(1, min(100, total // 10))
        self.start = time.perf_counter()
        self.smoothed: float | None = None
        self.history: list[tuple[int, float]] = []

    def update(self, step: int, loss: float) -> None:
        self.smoothed = loss if self.smoothed is None else 0.98 * self.smoothed + 0.02 * loss
        if (step + 1) % self.every == 0 or step + 1 == self.total:
            elapsed = time.perf_counter() - self.start
            eta = elapsed / (step + 1) * (self.total - step - 1)
            self.history.append((step + 1, round(self.smoothed, 6)))
            self.log(f"[{self.name}] step {step + 1}/{self.total}  loss {self.smoothed:.5f}  "
                 f"elapsed {elapsed:6.0f}s  eta {eta:5.0f}s")

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 5% of the base rate."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


def image_batches(seed: int, batch: int, resolution: int) -> Iterator[tuple[torch.Tensor, list[str]]]:
    stream = data.training_samples(seed, resolution)
    while True:
        items = [next(stream) for _ in range(batch)]
        pixels = np.stack([img for img, _, _ in items]).astype(np.float32) / 127.5 - 1.0
        yield torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(), [cap for _, cap, _ in items]


def train_vae(vae, *, steps: int, batch: int, lr: float, seed: int, kl_weight: float = 1e-6,
              log: Callable[[str], None] = _log) -> dict:
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    batches = image_batches(seed, batch, toy_config.RESOLUTION)
    progress = Progress("vae", steps, log=log)
    vae.train()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, warmup=100)
        x, _ = next(batches)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        loss = F.l1_loss(recon, x) + kl_weight * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        progress.update(step, loss.item())
    vae.eval()
    return {"steps": steps, "batch": batch, "lr": lr, "kl_weight": kl_weight, "seconds": round(progress.seconds, 1),
            "loss_history": progress.history}


def finetune_decoder(vae, *, steps: int, batch: int, lr: float, seed: int,
                     log: Callable[[str], None] = _log) -> dict:
    """Decoder-only L1 training on posterior samples of the frozen encoder: sharper, truer colours
    without moving the latent space (so a UNet trained on it stays valid)."""
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    batches = image_batches(seed, batch, toy_config.RESOLUTION)
    progress = Progress("decoder", steps, log=log)
    vae.eval()
    vae.decoder.train()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, warmup=50)
        x, _ = next(batches)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.sample()
        loss = F.l1_loss(vae.decode(z).sample, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        progress.update(step, loss.item())
    vae.eval()
    return {"steps": steps, "batch": batch, "lr": lr, "seconds": round(progress.seconds, 1),
            "loss_history": progress.history}


@torch.no_grad()
def encode_dataset(vae, tokenizer, *, n: int, seed: int, batch: int = 250) -> dict[str, torch.Tensor]:
    """Posterior mean/std of `n` training images, and their captions' token ids."""
    means, stds, ids = [], [], []
    batches = image_batches(seed, batch, toy_config.RESOLUTION)
    for _ in range(math.ceil(n / batch)):
        x, captions = next(batches)
        dist = vae.encode(x).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
        ids.append(tokenizer(captions, padding="max_length", max_length=77, truncation=True,
                             return_tensors="pt").input_ids)
    return {"mean": torch.cat(means)[:n], "std": torch.cat(stds)[:n], "ids": torch.cat(ids)[:n]}


def measure_scaling_factor(dataset: dict[str, torch.Tensor], seed: int) -> float:
    g = torch.Generator().manual_seed(seed)
    z = dataset["mean"] + dataset["std"] * torch.randn(dataset["mean"].shape, generator=g)
    return float(1.0 / z.std())


def train_unet(unet, text_encoder, dataset: dict[str, torch.Tensor], empty_ids: torch.Tensor, *, steps: int,
               batch: int, lr: float, seed: int, scaling_factor: float, cond_dropout: float = 0.1,
               ema_decay: float = 0.999, log: Callable[[str], None] = _log) -> tuple[torch.nn.Module, dict]:
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(**{k: v for k, v in toy_config.SCHEDULER_CONFIG.items() if k != "timestep_spacing"})
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    ema = copy.deepcopy(unet).requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    n = dataset["mean"].shape[0]
    progress = Progress("unet+text", steps, log=log)
    unet.train()
    text_encoder.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup=200)
        idx = torch.randint(0, n, (batch,), generator=g)
        z0 = (dataset["mean"][idx] + dataset["std"][idx] * torch.randn((batch, 4, 8, 8), generator=g)) * scaling_factor
        ids = dataset["ids"][idx].clone()
        drop = torch.rand(batch, generator=g) < cond_dropout
        ids[drop] = empty_ids
        noise = torch.randn(z0.shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (batch,), generator=g)
        zt = sched.add_noise(z0, noise, t)
        context = text_encoder(ids).last_hidden_state
        loss = F.mse_loss(unet(zt, t, context).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(ema_decay, (1 + step) / (10 + step))
            for pe, p in zip(ema.parameters(), unet.parameters()):
                pe.lerp_(p, 1 - decay)
        progress.update(step, loss.item())
    ema.eval()
    text_encoder.eval()
    return ema, {"steps": steps, "batch": batch, "lr": lr, "cond_dropout": cond_dropout, "ema_decay": ema_decay,
                 "seconds": round(progress.seconds, 1), "loss_history": progress.history}


def zero_unused_token_rows(text_encoder, used_ids: torch.Tensor) -> int:
    """Zero the embeddings of tokens that never occur in the toy world's captions: they carried no
    training signal, and zero rows make the shipped file compress to a fraction of its size."""
    emb = text_encoder.get_input_embeddings().weight
    keep = torch.zeros(emb.shape[0], dtype=torch.bool)
    keep[used_ids.unique()] = True
    with torch.no_grad():
        emb[~keep] = 0
    return int(keep.sum())


def save_folder(out: str, vae, text_encoder, unet, record: dict) -> None:
    """A diffusers StableDiffusionPipeline folder, weights in fp16 safetensors.

    The tokenizer is not written: it is sdrt's shipped CLIP vocabulary (sdrt.prompt.get_tokenizer),
    passed as ``tokenizer=`` when diffusers loads the folder.
    """
    import diffusers
    from diffusers import EulerDiscreteScheduler

    os.makedirs(out, exist_ok=True)
    verbosity = diffusers.utils.logging.get_verbosity()
    diffusers.utils.logging.set_verbosity_error()  # silence the fp16-cast notice: nothing here must stay fp32
    try:
        vae.to(torch.float16).save_pretrained(os.path.join(out, "vae"), safe_serialization=True)
        text_encoder.to(torch.float16).save_pretrained(os.path.join(out, "text_encoder"), safe_serialization=True)
        unet.to(torch.float16).save_pretrained(os.path.join(out, "unet"), safe_serialization=True)
    finally:
        diffusers.utils.logging.set_verbosity(verbosity)
    EulerDiscreteScheduler(**toy_config.SCHEDULER_CONFIG).save_pretrained(os.path.join(out, "scheduler"))
    index = {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": diffusers.__version__,
        "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"], "safety_checker": [None, None],
        "feature_extractor": [None, None], "image_encoder": [None, None], "requires_safety_checker": False,
    }
    with open(os.path.join(out, "model_index.json"), "w", encoding="utf-8") as f:
        json.dump(index, f, indent=2)
    with open(os.path.join(out, "toy_training.json"), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)


def train(out: str, *, command: str | None = None, seed: int = 0, vae_steps: int = 3000, vae_batch: int = 16,
          vae_lr: float = 5e-4, decoder_steps: int = 0, decoder_lr: float = 3e-4, dataset_size: int = 40000,
          unet_steps: int = 6000, unet_batch: int = 64, unet_lr: float = 1e-3, resume: str | None = None,
          log: Callable[[str], None] = _log) -> dict:
    from ..prompt import get_tokenizer

    torch.set_num_threads(os.cpu_count() or 1)
    started = time.perf_counter()
    tokenizer = get_tokenizer()
    if resume:
        from ..loading import load_components

        unet, text_encoder, vae = load_components(resume, torch.float32)
        with open(os.path.join(resume, "toy_training.json"), encoding="utf-8") as f:
            previous = json.load(f)
    else:
        vae, text_encoder, unet = toy_config.build_components(seed)
        previous = None
    log(f"training the toy model into {out} (seed {seed}, {torch.get_num_threads()} threads"
        f"{', resuming ' + resume if resume else ''})")
    vae_record = train_vae(vae, steps=vae_steps, batch=vae_batch, lr=vae_lr, seed=seed, log=log) if vae_steps else None
    decoder_record = (finetune_decoder(vae, steps=decoder_steps, batch=vae_batch, lr=decoder_lr, seed=seed + 3, log=log)
                      if decoder_steps else None)
    dataset = encode_dataset(vae, tokenizer, n=dataset_size, seed=seed + 1)
    if vae_steps or not resume:
        scaling_factor = measure_scaling_factor(dataset, seed)
        vae.register_to_config(scaling_factor=scaling_factor)
    else:  # the encoder did not change: keep the latent space and its factor
        scaling_factor = float(vae.config.scaling_factor)
    log(f"latent scaling factor (1 / std of posterior samples): {scaling_factor:.5f}")
    empty_ids = tokenizer("", padding="max_length", max_length=77, return_tensors="pt").input_ids[0]
    unet_ema, unet_record = train_unet(unet, text_encoder, dataset, empty_ids, steps=unet_steps, batch=unet_batch,
                                       lr=unet_lr, seed=seed + 2, scaling_factor=scaling_factor, log=log)
    used = zero_unused_token_rows(text_encoder, torch.cat([dataset["ids"].flatten(), empty_ids]))
    record = {
        "command": command,
        "seed": seed, "scaling_factor": scaling_factor, "dataset_size": dataset_size, "used_token_rows": used,
        "resumed_from": previous, "vae": vae_record, "decoder_finetune": decoder_record,
        "unet_and_text_encoder": unet_record,
        "total_seconds": round(time.perf_counter() - started, 1),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "threads": torch.get_num_threads()},
        "held_out_combinations": sorted(map(list, data.held_out_combinations())),
    }
    save_folder(out, vae, text_encoder, unet_ema, record)
    log(f"done in {record['total_seconds']:.0f}s; wrote {out}")
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sdrt.toy.train", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output folder (diffusers layout)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vae-steps", type=int, default=3000)
    p.add_argument("--unet-steps", type=int, default=6000)
    p.add_argument("--dataset-size", type=int, default=40000)
    p.add_argument("--unet-batch", type=int, default=64)
    p.add_argument("--unet-lr", type=float, default=1e-3)
    p.add_argument("--decoder-steps", type=int, default=0, help="decoder-only fine-tuning steps after the VAE")
    p.add_argument("--resume", default=None, help="continue from the weights in this toy folder")
    args = p.parse_args(argv)
    command = "python -m sdrt.toy.train " + " ".join(argv if argv is not None else sys.argv[1:])
    train(args.out, command=command, seed=args.seed, vae_steps=args.vae_steps, unet_steps=args.unet_steps,
          dataset_size=args.dataset_size, unet_batch=args.unet_batch, unet_lr=args.unet_lr,
          decoder_steps=args.decoder_steps, resume=args.resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
