"""Train the toy model family on the toy world (CPU or CUDA), reproducibly from a seed.

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
        self.smoothed: torch.Tensor | None = None
        self.history: list[tuple[int, float]] = []

    def update(self, step: int, loss: torch.Tensor) -> None:
        # Smoothed on the loss's device: reading it back (a GPU sync) happens only when printing.
        loss = loss.detach().float()
        self.smoothed = loss if self.smoothed is None else 0.98 * self.smoothed + 0.02 * loss
        if (step + 1) % self.every == 0 or step + 1 == self.total:
            smoothed = float(self.smoothed)
            elapsed = time.perf_counter() - self.start
            eta = elapsed / (step + 1) * (self.total - step - 1)
            self.history.append((step + 1, round(smoothed, 6)))
            self.log(f"[{self.name}] step {step + 1}/{self.total}  loss {smoothed:.5f}  "
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


class ImagePool:
    """Pre-rendered training images on the training device, sampled with a CPU generator (so the
    batches are the same on any device)."""

    def __init__(self, seed: int, n: int, device: torch.device, workers: int, log: Callable[[str], None] = _log):
        started = time.perf_counter()
        images, self.captions = data.render_pool(seed, n, toy_config.RESOLUTION, workers=workers)
        pixels = torch.from_numpy(images).permute(0, 3, 1, 2)
        # Foreground: pixels that differ from the plain background (read at a corner) by > 8/255.
        corner = pixels[:, :, :1, :1].to(torch.int16)
        self.foreground = ((pixels.to(torch.int16) - corner).abs().amax(1, keepdim=True) > 8).to(device)
        self.pixels = pixels.contiguous().to(device)
        log(f"rendered {n} images in {time.perf_counter() - started:.1f}s ({workers} workers)")

    def __len__(self) -> int:
        return self.pixels.shape[0]

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = idx.to(self.pixels.device)
        return self.pixels[idx].float() / 127.5 - 1.0, self.foreground[idx]


def weighted_l1(recon: torch.Tensor, x: torch.Tensor, foreground: torch.Tensor, weight: float) -> torch.Tensor:
    """L1 with the shapes' pixels weighted (1 + weight): a small shape is ~3% of the image, and its
    colour is what the prompt names, so an unweighted loss would spend itself on the background."""
    w = 1.0 + weight * foreground.to(x.dtype)
    return ((recon - x).abs() * w).sum() / (w.sum() * x.shape[1])


def train_vae(vae, pool: ImagePool, *, steps: int, batch: int, lr: float, seed: int, kl_weight: float = 1e-6,
              foreground_weight: float = 4.0, log: Callable[[str], None] = _log) -> dict:
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    progress = Progress("vae", steps, log=log)
    vae.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup=100)
        x, fg = pool.batch(torch.randint(0, len(pool), (batch,), generator=g))
        posterior = vae.encode(x).latent_dist
        eps = torch.randn(posterior.mean.shape, generator=g).to(x.device)
        recon = vae.decode(posterior.mean + posterior.std * eps).sample
        loss = weighted_l1(recon, x, fg, foreground_weight) + kl_weight * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        progress.update(step, loss)
    vae.eval()
    return {"steps": steps, "batch": batch, "lr": lr, "kl_weight": kl_weight, "foreground_weight": foreground_weight,
            "seconds": round(progress.seconds, 1), "loss_history": progress.history}


def finetune_decoder(vae, pool: ImagePool, *, steps: int, batch: int, lr: float, seed: int,
                     foreground_weight: float = 4.0, log: Callable[[str], None] = _log) -> dict:
    """Decoder-only L1 training on posterior samples of the frozen encoder: sharper, truer colours
    without moving the latent space (so a UNet trained on it stays valid)."""
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    progress = Progress("decoder", steps, log=log)
    vae.eval()
    vae.decoder.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup=50)
        x, fg = pool.batch(torch.randint(0, len(pool), (batch,), generator=g))
        with torch.no_grad():
            posterior = vae.encode(x).latent_dist
            z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=g).to(x.device)
        loss = weighted_l1(vae.decode(z).sample, x, fg, foreground_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        progress.update(step, loss)
    vae.eval()
    return {"steps": steps, "batch": batch, "lr": lr, "foreground_weight": foreground_weight,
            "seconds": round(progress.seconds, 1), "loss_history": progress.history}


@torch.no_grad()
def encode_dataset(vae, tokenizer, pool: ImagePool, *, batch: int = 250) -> dict[str, torch.Tensor]:
    """Posterior mean/std of every pool image, and their captions' token ids (on the pool's device)."""
    means, stds = [], []
    for start in range(0, len(pool), batch):
        x, _ = pool.batch(torch.arange(start, min(start + batch, len(pool))))
        dist = vae.encode(x).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    ids = tokenizer(pool.captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    return {"mean": torch.cat(means), "std": torch.cat(stds), "ids": ids.to(pool.pixels.device)}


def measure_scaling_factor(dataset: dict[str, torch.Tensor], seed: int) -> float:
    g = torch.Generator().manual_seed(seed)
    z = dataset["mean"] + dataset["std"] * torch.randn(dataset["mean"].shape, generator=g).to(dataset["mean"].device)
    return float(1.0 / z.float().std())


def train_unet(unet, text_encoder, dataset: dict[str, torch.Tensor], empty_ids: torch.Tensor, *, steps: int,
               batch: int, lr: float, seed: int, scaling_factor: float, cond_dropout: float = 0.1,
               ema_decay: float = 0.999, log: Callable[[str], None] = _log) -> tuple[torch.nn.Module, dict]:
    from diffusers import DDPMScheduler

    device = dataset["mean"].device
    sched = DDPMScheduler(**{k: v for k, v in toy_config.SCHEDULER_CONFIG.items() if k != "timestep_spacing"})
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    ema = copy.deepcopy(unet).requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    n = dataset["mean"].shape[0]
    shape = (batch, *dataset["mean"].shape[1:])
    empty_ids = empty_ids.to(device)
    progress = Progress("unet+text", steps, log=log)
    unet.train()
    text_encoder.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup=200)
        # All randomness from the CPU generator, then moved: the same draws on every device.
        idx = torch.randint(0, n, (batch,), generator=g).to(device)
        z0 = (dataset["mean"][idx] + dataset["std"][idx] * torch.randn(shape, generator=g).to(device)) * scaling_factor
        ids = dataset["ids"][idx].clone()
        drop = (torch.rand(batch, generator=g) < cond_dropout).to(device)
        ids[drop] = empty_ids
        noise = torch.randn(shape, generator=g).to(device)
        t = torch.randint(0, sched.config.num_train_timesteps, (batch,), generator=g).to(device)
        zt = sched.add_noise(z0, noise, t)  # DDPM q(z_t | z_0), Ho et al. 2020 eq. 4; follows z0's device
        context = text_encoder(ids).last_hidden_state
        loss = F.mse_loss(unet(zt, t, context).sample, noise)
        step_with_ema(opt, loss, params, ema, unet, step, ema_decay)
        progress.update(step, loss)
    ema.eval()
    text_encoder.eval()
    return ema, {"steps": steps, "batch": batch, "lr": lr, "cond_dropout": cond_dropout, "ema_decay": ema_decay,
                 "seconds": round(progress.seconds, 1), "loss_history": progress.history}


def step_with_ema(opt, loss: torch.Tensor, params: list, ema, unet, step: int, ema_decay: float) -> None:
    """One optimizer step (gradients clipped to norm 1) and the EMA of the UNet's weights, its decay
    warmed up as (1 + step) / (10 + step) so the early average is not the random init."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    with torch.no_grad():
        decay = min(ema_decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(list(ema.parameters()), list(unet.parameters()), 1 - decay)


def zero_unused_token_rows(text_encoder, used_ids: torch.Tensor) -> int:
    """Zero the embeddings of tokens that never occur in the toy world's captions: they carried no
    training signal, and zero rows make the shipped file compress to a fraction of its size."""
    emb = text_encoder.get_input_embeddings().weight
    keep = torch.zeros(emb.shape[0], dtype=torch.bool)
    keep[used_ids.unique()] = True
    with torch.no_grad():
        emb[~keep] = 0
    return int(keep.sum())


def save_fp16(out: str, modules: dict) -> None:
    """Each module as fp16 safetensors in out/<name>/ (diffusers / transformers save_pretrained)."""
    import diffusers

    os.makedirs(out, exist_ok=True)
    verbosity = diffusers.utils.logging.get_verbosity()
    diffusers.utils.logging.set_verbosity_error()  # silence the fp16-cast notice: nothing here must stay fp32
    try:
        for name, module in modules.items():
            module.to(torch.float16).save_pretrained(os.path.join(out, name), safe_serialization=True)
    finally:
        diffusers.utils.logging.set_verbosity(verbosity)


def cpu_machine() -> dict:
    """What a CPU training record says about the machine."""
    return {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "device": "cpu"}


def save_folder(out: str, vae, text_encoder, unet, record: dict) -> None:
    """A diffusers StableDiffusionPipeline folder, weights in fp16 safetensors.

    The tokenizer is not written: it is sdrt's shipped CLIP vocabulary (sdrt.prompt.get_tokenizer),
    passed as ``tokenizer=`` when diffusers loads the folder.
    """
    import diffusers
    from diffusers import EulerDiscreteScheduler

    save_fp16(out, {"vae": vae, "text_encoder": text_encoder, "unet": unet})
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


def train(out: str, *, command: str | None = None, seed: int = 0, device: str = "cpu", workers: int = 1,
          vae_steps: int = 3000, vae_batch: int = 16, vae_lr: float = 5e-4, decoder_steps: int = 0,
          decoder_lr: float = 3e-4, foreground_weight: float = 4.0, pool_size: int = 40000,
          dataset_size: int = 40000, unet_steps: int = 6000, unet_batch: int = 64, unet_lr: float = 1e-3,
          vae_channels: tuple[int, ...] | None = None, unet_channels: tuple[int, ...] | None = None,
          resume: str | None = None, log: Callable[[str], None] = _log) -> dict:
    from ..prompt import get_tokenizer

    if not resume and not vae_steps:
        raise ValueError("vae_steps=0 without resume: the UNet would learn the latents of an untrained VAE")
    dev = torch.device(device)
    if dev.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    else:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    started = time.perf_counter()
    tokenizer = get_tokenizer()
    if resume:
        from ..loading import load_components

        unet, text_encoder, vae = load_components(resume, torch.float32)
        with open(os.path.join(resume, "toy_training.json"), encoding="utf-8") as f:
            previous = json.load(f)
    else:
        vae, text_encoder, unet = toy_config.build_components(seed, vae_channels=vae_channels,
                                                              unet_channels=unet_channels)
        previous = None
    vae, text_encoder, unet = vae.to(dev), text_encoder.to(dev), unet.to(dev)
    log(f"training the toy model into {out} (seed {seed}, {device}, {torch.get_num_threads()} threads"
        f"{', resuming ' + resume if resume else ''})")
    vae_record = decoder_record = None
    if vae_steps or decoder_steps:
        pool = ImagePool(seed, pool_size, dev, workers, log=log)
        if vae_steps:
            vae_record = train_vae(vae, pool, steps=vae_steps, batch=vae_batch, lr=vae_lr, seed=seed,
                                   foreground_weight=foreground_weight, log=log)
        if decoder_steps:
            decoder_record = finetune_decoder(vae, pool, steps=decoder_steps, batch=vae_batch, lr=decoder_lr,
                                              seed=seed + 3, foreground_weight=foreground_weight, log=log)
        del pool
    dataset = encode_dataset(vae, tokenizer, ImagePool(seed + 1, dataset_size, dev, workers, log=log))
    if vae_steps or not resume:
        scaling_factor = measure_scaling_factor(dataset, seed)
        vae.register_to_config(scaling_factor=scaling_factor)
    else:  # the encoder did not change: keep the latent space and its factor
        scaling_factor = float(vae.config.scaling_factor)
    log(f"latent scaling factor (1 / std of posterior samples): {scaling_factor:.5f}")
    empty_ids = tokenizer("", padding="max_length", max_length=77, return_tensors="pt").input_ids[0]
    unet_ema, unet_record = train_unet(unet, text_encoder, dataset, empty_ids, steps=unet_steps, batch=unet_batch,
                                       lr=unet_lr, seed=seed + 2, scaling_factor=scaling_factor, log=log)
    used = zero_unused_token_rows(text_encoder, torch.cat([dataset["ids"].flatten().cpu(), empty_ids]))
    record = {
        "command": command,
        "seed": seed, "scaling_factor": scaling_factor, "pool_size": pool_size, "dataset_size": dataset_size,
        "used_token_rows": used, "resumed_from": previous, "vae": vae_record, "decoder_finetune": decoder_record,
        "unet_and_text_encoder": unet_record,
        "total_seconds": round(time.perf_counter() - started, 1),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "device": device,
                    "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None},
        "held_out_combinations": sorted(map(list, data.held_out_combinations())),
    }
    save_folder(out, vae.cpu(), text_encoder.cpu(), unet_ema.cpu(), record)
    log(f"done in {record['total_seconds']:.0f}s; wrote {out}")
    return record


def _channels(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(c) for c in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sdrt.toy.train", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output folder (diffusers layout)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]; the random draws are the same on both")
    p.add_argument("--workers", type=int, default=1, help="processes rendering the image pools")
    p.add_argument("--vae-steps", type=int, default=3000)
    p.add_argument("--vae-batch", type=int, default=16, help="also the decoder fine-tuning batch")
    p.add_argument("--decoder-steps", type=int, default=0, help="decoder-only fine-tuning steps after the VAE")
    p.add_argument("--foreground-weight", type=float, default=4.0, help="extra L1 weight on the shapes' pixels")
    p.add_argument("--pool-size", type=int, default=40000, help="images rendered for VAE training")
    p.add_argument("--unet-steps", type=int, default=6000)
    p.add_argument("--dataset-size", type=int, default=40000, help="images encoded for UNet training")
    p.add_argument("--unet-batch", type=int, default=64)
    p.add_argument("--unet-lr", type=float, default=1e-3)
    p.add_argument("--vae-channels", type=_channels, default=None, help="VAE block_out_channels, e.g. 32,32,64,64")
    p.add_argument("--unet-channels", type=_channels, default=None, help="UNet block_out_channels, e.g. 64,128")
    p.add_argument("--resume", default=None, help="continue from the weights in this toy folder")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device}: torch {torch.__version__} sees no CUDA device")
    command = "python -m sdrt.toy.train " + " ".join(argv if argv is not None else sys.argv[1:])
    train(args.out, command=command, seed=args.seed, device=args.device, workers=args.workers,
          vae_steps=args.vae_steps, vae_batch=args.vae_batch, decoder_steps=args.decoder_steps,
          foreground_weight=args.foreground_weight, pool_size=args.pool_size, unet_steps=args.unet_steps,
          dataset_size=args.dataset_size, unet_batch=args.unet_batch, unet_lr=args.unet_lr,
          vae_channels=args.vae_channels, unet_channels=args.unet_channels, resume=args.resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
