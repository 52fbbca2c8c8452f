"""Train the toy upscaler: a small 2x RRDBNet (ESRGAN, Wang et al. 2018, in Real-ESRGAN's key
names, Wang et al. 2021, with one nearest x2 + conv upsampling step as 2x ESRGAN models have) on
toy-world images, on the CPU in about ten minutes.

    python -m sdrt.toy.train_upscaler --out python/sdrt/toy/weights/upscaler

Pairs: the same scene rendered at 64 px (the input) and at 128 px (the target). The renderer
supersamples 4x4, so the 64 px render is the 128 px picture area-averaged, as a camera or a VAE
sees it. The hires fix feeds this upscaler 64 px images decoded by the toy VAE, so a fifth of the
inputs go through the toy VAE (encode, decode: its blur, ringing and colour shifts) and half of
the crops get mild Gaussian noise; no JPEG (nothing in sdrt makes JPEG artifacts before an
upscale). More VAE inputs cost sharpness on clean ones (the net cannot always tell which it has).

Loss: MSE, the quantity PSNR measures (ESRGAN's PSNR-oriented pre-training uses a pixel loss;
with L1 the flat pixels, whose errors are tiny, pulled as hard as the edges and training was
several times slower here). Crops are small (16 px in, 32 px out) and centred on the target's
edges three times in four: the flat rest of a toy image is easy, and many small steps beat fewer
large ones within a CPU budget. The net starts as a nearest-neighbour upscaler (see
:func:`build_toy_upscaler`).

Writes ``ToyESRGAN_2x.safetensors`` (fp16, Real-ESRGAN key names, so sdrt loads it as any
RRDBNet) and ``toy_upscaler_training.json`` (command, steps, seconds, PSNR against PIL Lanczos on
held-out scenes, measured with the fp16 file) into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from . import data
from .train import Progress, lr_at

WEIGHTS_NAME = "ToyESRGAN_2x.safetensors"
RECORD_NAME = "toy_upscaler_training.json"
LR_SIZE, SCALE = 64, 2
NETWORK = dict(num_feat=32, num_block=2, num_grow_ch=16, num_upsample=1, unshuffle=1)
EVAL_SEED_OFFSET = 1_000_003  # evaluation scenes come from a different stream than training's


def toy_upscaler_path() -> str:
    """The shipped toy upscaler (sdrt/toy/weights/upscaler/ToyESRGAN_2x.safetensors)."""
    from importlib.resources import files

    return str(files("sdrt.toy") / "weights" / "upscaler" / WEIGHTS_NAME)


def build_toy_upscaler(seed: int = 0):
    """A freshly initialised toy RRDBNet. Convs get ESRGAN's smaller initialisation (Kaiming x 0.1,
    which keeps the residual trunk near identity early on); the convs on the path from input to
    output (conv_first, conv_up1, conv_hr, conv_last) also get an identity centre tap on the three
    image channels, so the untrained net is already a nearest-neighbour upscaler and training
    learns the correction, which a few CPU minutes can do."""
    from sdrt.postprocess.esrgan_nets import RRDBNet

    torch.manual_seed(seed)
    net = RRDBNet(**NETWORK)
    for name, module in net.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight)
            module.weight.data *= 0.1
            torch.nn.init.zeros_(module.bias)
            if name in ("conv_first", "conv_up1", "conv_hr", "conv_last"):
                channels = torch.arange(3)
                module.weight.data[channels, channels, 1, 1] += 1.0
    return net


def scene_pairs(seed: int, n: int, *, held_out_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(low, high): `n` scenes rendered at 64 and 128 px, uint8 (n, H, W, 3). Training scenes
    exclude the held-out colour/shape/position triples; evaluation scenes (`held_out_only`) do not
    exclude them (so they include triples training never saw)."""
    rng = np.random.default_rng(seed)
    exclude = frozenset() if held_out_only else data.held_out_combinations()
    scenes = [data.random_scene(rng, exclude=exclude) for _ in range(n)]
    low = np.stack([data.render(s, LR_SIZE) for s in scenes])
    high = np.stack([data.render(s, LR_SIZE * SCALE) for s in scenes])
    return low, high


@torch.no_grad()
def vae_roundtrip(images: np.ndarray, batch: int = 64) -> np.ndarray:
    """uint8 images encoded and decoded by the shipped toy VAE (posterior mode): the artifacts the
    hires fix's 64 px images carry."""
    from importlib.resources import files

    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(files("sdrt.toy") / "weights" / "vae")).eval()
    out = []
    for start in range(0, len(images), batch):
        x = torch.from_numpy(images[start:start + batch]).permute(0, 3, 1, 2).float() / 127.5 - 1
        y = vae.decode(vae.encode(x).latent_dist.mode()).sample
        out.append(((y.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


class PairPool:
    """Training pairs as float tensors, with the target's edge pixels (where crops are centred:
    the flat rest of a toy image is easy, the edges are what an upscaler is for)."""

    def __init__(self, low_inputs: np.ndarray, high: np.ndarray) -> None:
        self.low = torch.from_numpy(low_inputs).permute(0, 3, 1, 2).float() / 255
        self.high = torch.from_numpy(high).permute(0, 3, 1, 2).float() / 255
        step_y = (self.high[..., 1:, :] - self.high[..., :-1, :]).abs().amax(1)
        step_x = (self.high[..., :, 1:] - self.high[..., :, :-1]).abs().amax(1)
        edges = F.pad(step_y, (0, 0, 0, 1)) + F.pad(step_x, (0, 1, 0, 0)) > 8 / 255
        self.edges = F.max_pool2d(edges[:, None].float(), 3, 1, 1)[:, 0] > 0  # (n, 128, 128)

    def batch(self, g: torch.Generator, size: int, crop: int, noise_max: float) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, self.low.shape[0], (size,), generator=g)
        lows, highs = [], []
        for i in idx.tolist():
            y, x = self._crop_origin(i, g, crop)
            lows.append(self.low[i, :, y:y + crop, x:x + crop])
            highs.append(self.high[i, :, SCALE * y:SCALE * (y + crop), SCALE * x:SCALE * (x + crop)])
        low = torch.stack(lows)
        sigma = torch.rand(size, 1, 1, 1, generator=g) * noise_max * (torch.rand(size, 1, 1, 1, generator=g) < 0.5)
        return low + sigma * torch.randn(low.shape, generator=g), torch.stack(highs)

    def _crop_origin(self, i: int, g: torch.Generator, crop: int) -> tuple[int, int]:
        limit = LR_SIZE - crop
        edge = self.edges[i].nonzero()
        if len(edge) and float(torch.rand(1, generator=g)) < 0.75:
            cy, cx = (edge[int(torch.randint(0, len(edge), (1,), generator=g))] // SCALE).tolist()
            return min(max(cy - crop // 2, 0), limit), min(max(cx - crop // 2, 0), limit)
        y, x = torch.randint(0, limit + 1, (2,), generator=g).tolist()
        return y, x


def train(net, pool: PairPool, *, steps: int, batch: int, crop: int, lr: float, seed: int,
          noise_max: float = 1 / 255) -> dict:
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.9, 0.99))
    g = torch.Generator().manual_seed(seed)
    progress = Progress("upscaler", steps)
    net.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup=50)
        low, high = pool.batch(g, batch, crop, noise_max)
        loss = F.mse_loss(net(low), high)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        progress.update(step, loss)
    net.eval()
    return {"steps": steps, "batch": batch, "crop": crop, "lr": lr, "noise_max": round(noise_max, 5),
            "seconds": round(progress.seconds, 1), "loss_history": progress.history}


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB of uint8 (n, H, W, 3) images (capped at 100 for identical images)."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean(axis=(1, 2, 3))
    return np.where(mse > 0, 10 * np.log10(255.0**2 / np.maximum(mse, 1e-12)), 100.0)


@torch.no_grad()
def upscale_uint8(model, images: np.ndarray) -> np.ndarray:
    """uint8 (n, H, W, 3) -> uint8 (n, sH, sW, 3) through `model`, untiled, rounded."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    y = model(x).clamp(0, 1)
    return (y * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def lanczos_uint8(images: np.ndarray, scale: int = SCALE) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(im).resize((im.shape[1] * scale, im.shape[0] * scale),
                                                           Image.LANCZOS)) for im in images])


def psnr_vs_lanczos(model, low: np.ndarray, high: np.ndarray) -> dict:
    """Mean PSNR (dB) of `model`'s and PIL Lanczos's 2x upscales of `low` against `high`."""
    ours, lanczos = psnr(upscale_uint8(model, low), high), psnr(lanczos_uint8(low), high)
    return {"images": len(low), "model_psnr": round(float(ours.mean()), 3),
            "lanczos_psnr": round(float(lanczos.mean()), 3),
            "gain_db": round(float(ours.mean() - lanczos.mean()), 3),
            "images_where_model_wins": int((ours > lanczos).sum())}


def evaluate(model, seed: int, n: int) -> dict:
    """PSNR against Lanczos on `n` evaluation scenes, clean 64 px renders and toy-VAE round trips."""
    low, high = scene_pairs(seed + EVAL_SEED_OFFSET, n, held_out_only=True)
    return {"clean_64px": psnr_vs_lanczos(model, low, high),
            "toy_vae_roundtrip_64px": psnr_vs_lanczos(model, vae_roundtrip(low), high)}


def save(net, out: str) -> str:
    from safetensors.torch import save_file

    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, WEIGHTS_NAME)
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in net.state_dict().items()}
    save_file(tensors, path, metadata={"architecture": "RRDBNet (Real-ESRGAN key names, one upsampling step)",
                                       "scale": str(SCALE), "trained_by": "python -m sdrt.toy.train_upscaler"})
    return path


def run(out: str, *, command: str, seed: int, steps: int, batch: int, crop: int, lr: float, pool_size: int,
        vae_fraction: float, eval_images: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    started = time.perf_counter()
    low, high = scene_pairs(seed, pool_size)
    n_vae = round(pool_size * vae_fraction)
    inputs = np.concatenate([vae_roundtrip(low[:n_vae]), low[n_vae:]]) if n_vae else low
    pool = PairPool(inputs, high)
    print(f"pool of {pool_size} pairs in {time.perf_counter() - started:.1f}s", flush=True)
    net = build_toy_upscaler(seed)
    training = train(net, pool, steps=steps, batch=batch, crop=crop, lr=lr, seed=seed)
    path = save(net, out)
    from sdrt.postprocess import load_upscaler_file

    shipped = load_upscaler_file(path)  # evaluate the fp16 file as users get it
    record = {"command": command, "seed": seed, "network": {"layout": "RRDBNet", **NETWORK, "scale": SCALE},
              "file": WEIGHTS_NAME, "bytes": os.path.getsize(path), "pool_size": pool_size,
              "degradations": f"{n_vae} of the inputs through the toy VAE (encode/decode); Gaussian "
                              "noise sigma ~ U(0, 1/255) on half the crops",
              "training": training, "evaluation": evaluate(shipped, seed, eval_images),
              "total_seconds": round(time.perf_counter() - started, 1),
              "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                          "torch": torch.__version__, "threads": threads}}
    with open(os.path.join(out, RECORD_NAME), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sdrt.toy.train_upscaler", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for the weights and the JSON record")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=1800)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--crop", type=int, default=16, help="input crop side (the target is twice that)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--pool-size", type=int, default=2000, help="scene pairs rendered for training")
    p.add_argument("--vae-fraction", type=float, default=0.2,
                   help="share of the training inputs that go through the toy VAE")
    p.add_argument("--eval-images", type=int, default=200)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = p.parse_args(argv)
    command = "python -m sdrt.toy.train_upscaler " + " ".join(argv if argv is not None else sys.argv[1:])
    record = run(args.out, command=command, seed=args.seed, steps=args.steps, batch=args.batch, crop=args.crop,
                 lr=args.lr, pool_size=args.pool_size, vae_fraction=args.vae_fraction, eval_images=args.eval_images, threads=args.threads)
    print(json.dumps(record["evaluation"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
