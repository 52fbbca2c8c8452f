"""Train a toy ControlNet (canny or seg) on the toy world, beside the frozen toy model.

The recipe of Zhang et al. 2023 ("Adding Conditional Control to Text-to-Image Diffusion Models"):
the UNet and text encoder stay frozen, a trainable copy of the UNet's encoder reads the control
image through a small hint encoder and adds its outputs to the UNet's skip connections through
zero-initialised convolutions; half the captions are dropped so that the ControlNet learns to
read the picture's layout from the control image alone. Loss: noise prediction (Ho et al. 2020,
eq. 14), EMA weights kept. Control images are what the preprocessors give at 64x64: the canny
module's edges (thresholds 100 / 200) or the toy world's segmentation map (toy.data).

    python -m sdrt.toy.train_control --kind canny --out /tmp/toy_canny --steps 3000 --threads 1
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..models import toy as toy_config
from . import data
from .train import Progress, cpu_machine, encode_dataset, lr_at, save_fp16, step_with_ema

KINDS = ("canny", "seg")


def control_image(kind: str, image: np.ndarray, scene: data.Scene) -> np.ndarray:
    """The (H, W, 3) uint8 control image of one training picture."""
    if kind == "canny":
        from ..control.preprocessors.edges import canny

        return np.repeat(canny(image, 100, 200)[..., None], 3, axis=-1)
    if kind == "seg":
        return data.segmentation_map(scene, image.shape[0])
    raise ValueError(f"kind={kind!r}; valid: {list(KINDS)}")


def misplaced_caption(scene: data.Scene, rng: np.random.Generator) -> str | None:
    """A caption of a one-shape scene that names another position (never a held-out triple), or
    None for two-shape scenes."""
    if len(scene.shapes) != 1:
        return None
    shape, held_out = scene.shapes[0], data.held_out_combinations()
    options = [p for p in data.POSITIONS if p != shape.position and (shape.colour, shape.shape, p) not in held_out]
    wrong = data.Scene((data.ShapeSpec(shape.shape, shape.colour, shape.size, str(rng.choice(options))),),
                       scene.background)
    return data.caption(wrong, int(rng.integers(4)))  # templates 0-3 name the position


class ControlPool:
    """Rendered pictures, captions and control images (uint8 on the CPU), drawn from the training
    stream (held-out colour / shape / position triples excluded). A share `misplaced` of the
    captions name a position the picture does not have: the picture follows the control image, so
    the ControlNet learns that its layout wins over the prompt's."""

    def __init__(self, kind: str, seed: int, n: int, misplaced: float = 0.0):
        stream = data.training_samples(seed, toy_config.RESOLUTION)
        rng = np.random.default_rng((seed, 7))
        images, controls, self.captions = [], [], []
        for _ in range(n):
            image, text, scene = next(stream)
            images.append(image)
            controls.append(control_image(kind, image, scene))
            wrong = misplaced_caption(scene, rng) if rng.random() < misplaced else None
            self.captions.append(wrong or text)
        self.pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        self.controls = torch.from_numpy(np.stack(controls)).permute(0, 3, 1, 2).contiguous()

    def __len__(self) -> int:
        return self.pixels.shape[0]

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.pixels[idx].float() / 127.5 - 1.0, None


def train(controlnet, unet, text_encoder, dataset: dict, controls: torch.Tensor, empty_ids: torch.Tensor, *,
          steps: int, batch: int, lr: float, seed: int, scaling_factor: float, caption_dropout: float = 0.5,
          ema_decay: float = 0.999) -> tuple:
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(**{k: v for k, v in toy_config.SCHEDULER_CONFIG.items() if k != "timestep_spacing"})
    params = list(controlnet.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    ema = copy.deepcopy(controlnet).requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    n, shape = dataset["mean"].shape[0], (batch, *dataset["mean"].shape[1:])
    progress = Progress("controlnet", steps)
    controlnet.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup=100)
        idx = torch.randint(0, n, (batch,), generator=g)
        z0 = (dataset["mean"][idx] + dataset["std"][idx] * torch.randn(shape, generator=g)) * scaling_factor
        ids = dataset["ids"][idx].clone()
        ids[torch.rand(batch, generator=g) < caption_dropout] = empty_ids
        noise = torch.randn(shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (batch,), generator=g)
        zt = sched.add_noise(z0, noise, t)
        with torch.no_grad():
            context = text_encoder(ids).last_hidden_state
        hint = controls[idx].float() / 255.0  # control images in [0, 1], as the pipelines give them
        down, mid = controlnet(zt, t, context, hint, return_dict=False)
        eps = unet(zt, t, context, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
        loss = F.mse_loss(eps, noise)
        step_with_ema(opt, loss, params, ema, controlnet, step, ema_decay)
        progress.update(step, loss)
    return ema.eval(), {"steps": steps, "batch": batch, "lr": lr, "caption_dropout": caption_dropout,
                        "ema_decay": ema_decay, "seconds": round(progress.seconds, 1),
                        "loss_history": progress.history}


def run(kind: str, out: str, *, toy: str, steps: int, batch: int, lr: float, dataset_size: int, seed: int,
        command: str, resume: str | None = None, misplaced: float = 0.0) -> dict:
    from ..loading import load_components
    from ..prompt import get_tokenizer

    started = time.perf_counter()
    unet, text_encoder, vae = load_components(toy, torch.float32)
    for module in (unet, text_encoder, vae):
        module.eval().requires_grad_(False)
    if resume:
        from diffusers import ControlNetModel

        controlnet = ControlNetModel.from_pretrained(resume, torch_dtype=torch.float32)
        with open(os.path.join(resume, "toy_training.json"), encoding="utf-8") as f:
            previous = json.load(f)
    else:
        controlnet, previous = toy_config.build_controlnet(unet), None
    pool = ControlPool(kind, seed, dataset_size, misplaced)
    tokenizer = get_tokenizer()
    dataset = encode_dataset(vae, tokenizer, pool)
    empty_ids = tokenizer("", padding="max_length", max_length=77, return_tensors="pt").input_ids[0]
    scaling_factor = float(vae.config.scaling_factor)
    ema, record = train(controlnet, unet, text_encoder, dataset, pool.controls, empty_ids, steps=steps, batch=batch,
                        lr=lr, seed=seed + 1, scaling_factor=scaling_factor)
    record = {"command": command, "kind": kind, "seed": seed, "dataset_size": dataset_size,
              "misplaced_captions": misplaced, "training": record,
              "resumed_from": previous,
              "total_seconds": round(time.perf_counter() - started, 1), "machine": cpu_machine()}
    save_fp16(os.path.dirname(out) or ".", {os.path.basename(out): ema})
    with open(os.path.join(out, "toy_training.json"), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
    return record


def main(argv: list[str] | None = None) -> int:
    from ..loading import toy_model_path

    p = argparse.ArgumentParser(prog="python -m sdrt.toy.train_control", description=__doc__.splitlines()[0])
    p.add_argument("--kind", required=True, choices=KINDS)
    p.add_argument("--out", required=True, help="output folder (a diffusers ControlNetModel)")
    p.add_argument("--toy", default=None, help="the toy model folder it controls (default: the shipped one)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--dataset-size", type=int, default=12000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--resume", default=None, help="continue from the ControlNet in this folder")
    p.add_argument("--misplaced", type=float, default=0.0,
                   help="share of captions naming a position the picture does not have")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python -m sdrt.toy.train_control " + " ".join(argv if argv is not None else sys.argv[1:])
    record = run(args.kind, args.out, toy=args.toy or toy_model_path("toy"), steps=args.steps, batch=args.batch,
                 lr=args.lr, dataset_size=args.dataset_size, seed=args.seed, command=command, resume=args.resume,
                 misplaced=args.misplaced)
    print(f"done in {record['total_seconds']:.0f}s; wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
