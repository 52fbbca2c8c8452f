"""Fine-tune the toy UNet and text encoder on 64 and 128 px pictures, so that the hires fix works
on the toy: trained at 64 px only, the UNet draws several small shapes on a 16x16 latent (what a
real model does far above its training size) instead of one shape as large as the prompt says.

Batches alternate between the two sizes (one 64 px batch every `low_every` steps, the others at
128 px: the same scenes rendered larger); everything else is the toy recipe (DDPM noise
prediction, conditioning dropout, EMA). The record is written with the weights, chained to the
model it resumed from.

    python -m sdrt.toy.train_multires --resume python/sdrt/toy/weights --out /tmp/toy_hr --steps 240 --low-every 2
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
from . import data
from .train import Progress, cpu_machine, encode_dataset, lr_at, save_folder, step_with_ema

SIZES = (64, 128)


class _Pool:
    """Rendered pictures for encode_dataset (no foreground mask: the VAE is not trained here)."""

    def __init__(self, seed: int, n: int, resolution: int):
        images, self.captions = data.render_pool(seed, n, resolution)
        self.pixels = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()

    def __len__(self) -> int:
        return self.pixels.shape[0]

    def batch(self, idx: torch.Tensor):
        return self.pixels[idx].float() / 127.5 - 1.0, None


def finetune(unet, text_encoder, datasets: dict, empty_ids: torch.Tensor, *, steps: int, low_every: int,
             batches: dict, lr: float, seed: int, scaling_factor: float, cond_dropout: float = 0.1,
             ema_decay: float = 0.99) -> tuple[torch.nn.Module, dict]:
    """The toy's UNet loss (Ho et al. 2020, eq. 14: predict the noise) on both sizes."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(**{k: v for k, v in toy_config.SCHEDULER_CONFIG.items() if k != "timestep_spacing"})
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    ema = copy.deepcopy(unet).requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    progress = Progress("unet+text (64/128 px)", steps)
    unet.train()
    text_encoder.train()
    for step in range(steps):
        size = SIZES[0] if step % low_every == 0 else SIZES[1]
        ds, batch = datasets[size], batches[size]
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup=30)
        idx = torch.randint(0, ds["mean"].shape[0], (batch,), generator=g)
        shape = (batch, *ds["mean"].shape[1:])
        z0 = (ds["mean"][idx] + ds["std"][idx] * torch.randn(shape, generator=g)) * scaling_factor
        ids = ds["ids"][idx].clone()
        ids[torch.rand(batch, generator=g) < cond_dropout] = empty_ids
        noise = torch.randn(shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (batch,), generator=g)
        loss = F.mse_loss(unet(sched.add_noise(z0, noise, t), t, text_encoder(ids).last_hidden_state).sample, noise)
        step_with_ema(opt, loss, params, ema, unet, step, ema_decay)
        progress.update(step, loss.detach())
    ema.eval()
    text_encoder.eval()
    return ema, {"steps": steps, "low_every": low_every, "batches": batches, "lr": lr, "seed": seed,
                 "cond_dropout": cond_dropout, "ema_decay": ema_decay, "seconds": round(progress.seconds, 1),
                 "loss_history": progress.history}


def main(argv: list[str] | None = None) -> int:
    from ..loading import load_components
    from ..prompt import get_tokenizer

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resume", required=True, help="the toy model folder to start from")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=240)
    p.add_argument("--low-every", type=int, default=2, help="one 64 px batch every N steps, the rest at 128 px")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pool", type=int, nargs=2, default=(6000, 2500), help="pictures at 64 and at 128 px")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    unet, text_encoder, vae = load_components(args.resume, torch.float32)
    with open(os.path.join(args.resume, "toy_training.json"), encoding="utf-8") as f:
        previous = json.load(f)
    tokenizer = get_tokenizer()
    with torch.no_grad():
        datasets = {64: encode_dataset(vae, tokenizer, _Pool(101, args.pool[0], 64)),
                    128: encode_dataset(vae, tokenizer, _Pool(102, args.pool[1], 128), batch=100)}
    empty = tokenizer("", padding="max_length", max_length=77, return_tensors="pt").input_ids[0]
    ema, record = finetune(unet, text_encoder, datasets, empty, steps=args.steps, low_every=args.low_every,
                           batches={64: 48, 128: 24}, lr=args.lr, seed=args.seed,
                           scaling_factor=float(vae.config.scaling_factor))
    save_folder(args.out, vae, text_encoder, ema, {
        **{k: previous[k] for k in ("seed", "scaling_factor", "used_token_rows", "held_out_combinations")
           if k in previous},
        "command": "python -m sdrt.toy.train_multires " + " ".join(argv if argv is not None else sys.argv[1:]),
        "pool_sizes": {"64": args.pool[0], "128": args.pool[1]}, "resumed_from": previous,
        "multires_finetune": record, "total_seconds": round(time.perf_counter() - started, 1),
        "machine": cpu_machine()})
    print(f"wrote {args.out} in {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
