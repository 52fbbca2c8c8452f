"""The key names and tensor shapes of published upscaler files, written down from the original
projects' architecture definitions (facts, not their code), and random weights in them.

* Real-ESRGAN (Wang et al. 2021, BasicSR's RRDBNet): RealESRGAN_x4plus.pth (23 RRDBs),
  RealESRGAN_x4plus_anime_6B.pth (6), RealESRGAN_x2plus.pth (pixel-unshuffled input: 12 channels
  into conv_first); each RRDB has rdb1..rdb3, each of conv1..conv5 with 64 features, growth 32.
* ESRGAN (Wang et al. 2018) old arch, RRDB_ESRGAN_x4_old_arch.pth: one flattened Sequential
  model.0 (first conv), model.1.sub.N.RDBj.convk.0 (the RRDBs; conv at index 0 of each conv
  block), model.1.sub.23 (trunk conv), upsample/conv/LeakyReLU triples (convs at model.3, model.6),
  model.8 (HR conv), model.10 (last conv).
* ESRGAN 2019 repository names (RRDB_ESRGAN_x4.pth, also BSRGAN): RRDB_trunk.N.RDBj.convk,
  trunk_conv, upconv1, upconv2, HRconv, conv_last.
* Real-ESRGAN SRVGGNetCompact: realesr-general-x4v3.pth (32 body convs), realesr-animevideov3.pth
  (16): body.0 conv 3->64, body.1 PReLU(64), (conv 64->64, PReLU) x num_conv, conv 64->48.
"""
from __future__ import annotations

import torch

Shapes = dict[str, tuple[int, ...]]


def _conv(keys: Shapes, name: str, out_ch: int, in_ch: int) -> None:
    keys[f"{name}.weight"] = (out_ch, in_ch, 3, 3)
    keys[f"{name}.bias"] = (out_ch,)


def _rdb_convs(keys: Shapes, prefix: str, suffix: str, nf: int = 64, gc: int = 32) -> None:
    """conv1..conv5 of one dense block: conv k sees nf + (k-1) gc channels."""
    for k in range(1, 6):
        _conv(keys, f"{prefix}conv{k}{suffix}", nf if k == 5 else gc, nf + (k - 1) * gc)


def realesrgan_rrdbnet(num_block: int = 23, in_ch: int = 3, nf: int = 64, gc: int = 32) -> Shapes:
    keys: Shapes = {}
    _conv(keys, "conv_first", nf, in_ch)
    for i in range(num_block):
        for j in (1, 2, 3):
            _rdb_convs(keys, f"body.{i}.rdb{j}.", "", nf, gc)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        _conv(keys, name, nf, nf)
    _conv(keys, "conv_last", 3, nf)
    return keys


def esrgan_old_arch(scale: int = 4, num_block: int = 23, nf: int = 64) -> Shapes:
    n_up = {1: 0, 2: 1, 4: 2, 8: 3}[scale]
    keys: Shapes = {}
    _conv(keys, "model.0", nf, 3)
    for i in range(num_block):
        for j in (1, 2, 3):
            _rdb_convs(keys, f"model.1.sub.{i}.RDB{j}.", ".0", nf)
    _conv(keys, f"model.1.sub.{num_block}", nf, nf)
    for k in range(1, n_up + 1):
        _conv(keys, f"model.{3 * k}", nf, nf)
    _conv(keys, f"model.{3 * n_up + 2}", nf, nf)
    _conv(keys, f"model.{3 * n_up + 4}", 3, nf)
    return keys


def esrgan_rrdb_trunk(num_block: int = 23, nf: int = 64) -> Shapes:
    keys: Shapes = {}
    _conv(keys, "conv_first", nf, 3)
    for i in range(num_block):
        for j in (1, 2, 3):
            _rdb_convs(keys, f"RRDB_trunk.{i}.RDB{j}.", "", nf)
    for name in ("trunk_conv", "upconv1", "upconv2", "HRconv"):
        _conv(keys, name, nf, nf)
    _conv(keys, "conv_last", 3, nf)
    return keys


def srvgg_compact(num_conv: int, nf: int = 64, scale: int = 4) -> Shapes:
    keys: Shapes = {}
    _conv(keys, "body.0", nf, 3)
    keys["body.1.weight"] = (nf,)
    for i in range(1, num_conv + 1):
        _conv(keys, f"body.{2 * i}", nf, nf)
        keys[f"body.{2 * i + 1}.weight"] = (nf,)
    _conv(keys, f"body.{2 * num_conv + 2}", 3 * scale * scale, nf)
    return keys


# name -> (shapes, layout sdrt should report, scale)
PUBLISHED = {
    "RRDB_ESRGAN_x4_old_arch": (lambda: esrgan_old_arch(4), "ESRGAN (old arch)", 4),
    "RealESRGAN_x4plus": (lambda: realesrgan_rrdbnet(23), "RRDBNet", 4),
    "RealESRGAN_x2plus": (lambda: realesrgan_rrdbnet(23, in_ch=12), "RRDBNet", 2),
    "RealESRGAN_x4plus_anime_6B": (lambda: realesrgan_rrdbnet(6), "RRDBNet", 4),
    "realesr-general-x4v3": (lambda: srvgg_compact(32), "SRVGGNetCompact", 4),
    "realesr-animevideov3": (lambda: srvgg_compact(16), "SRVGGNetCompact", 4),
}


def random_weights(shapes: Shapes, seed: int = 0) -> dict[str, torch.Tensor]:
    """Weights ~ N(0, 1/fan_in) (activations stay O(1) through deep nets), biases ~ N(0, 0.01^2),
    PReLU slopes ~ U(0, 0.3): random but of realistic size."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        if len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            out[key] = torch.randn(shape, generator=g) / fan_in**0.5
        elif key.endswith(".bias"):
            out[key] = torch.randn(shape, generator=g) * 0.01
        else:
            out[key] = torch.rand(shape, generator=g) * 0.3
    return out
