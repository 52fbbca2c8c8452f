"""The ESRGAN family of super-resolution networks, written for sdrt with the published key names.

* :class:`RRDBNet`: the generator of ESRGAN (Wang et al. 2018, "ESRGAN: Enhanced Super-Resolution
  Generative Adversarial Networks", ECCV workshops) as Real-ESRGAN (Wang et al. 2021,
  "Real-ESRGAN: Training Real-World Blind Super-Resolution with Pure Synthetic Data", ICCV
  workshops) publishes it: Residual-in-Residual Dense Blocks (RRDB) at the input resolution, then
  nearest-neighbour x2 upsampling + conv steps. Real-ESRGAN's x2 and x1 models pixel-unshuffle the
  input first (space-to-depth by 2 or 4) and keep the x4 upsampling tail.
* :class:`SRVGGNetCompact`: Real-ESRGAN's compact VGG-style net (the "v3" general and anime video
  models): plain conv + PReLU layers at the input resolution, one pixel shuffle to the output
  size, plus the nearest-upsampled input (the network learns the residual).

Parameter names are those of the published files (``conv_first``, ``body.N.rdb1.conv1``, ...;
``body.N`` for the compact net), so a converted state dict loads with ``strict=True`` and every
key and shape is checked. The forward passes compute exactly what the papers' reference code
computes, in the same order (verified against an independent implementation in the tests).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ResidualDenseBlock", "RRDB", "RRDBNet", "SRVGGNetCompact", "pad_to_multiple"]

# ESRGAN's constants: LeakyReLU slope and the residual scaling beta (section 3.2 of the paper).
LRELU_SLOPE = 0.2
RESIDUAL_SCALE = 0.2


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the bottom/right of (N, C, H, W) to multiples of `multiple`, reflecting the image (as
    Real-ESRGAN's inference does before pixel-unshuffling); replicate where the image is too small
    to reflect."""
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if not (pad_h or pad_w):
        return x
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


class ResidualDenseBlock(nn.Module):
    """Five 3x3 convs, each seeing the block input and every earlier output (dense connections);
    the last one's output is scaled by beta = 0.2 and added to the input (ESRGAN, Fig. 4)."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        for i in range(4):
            setattr(self, f"conv{i + 1}", nn.Conv2d(num_feat + i * num_grow_ch, num_grow_ch, 3, 1, 1))
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            features.append(F.leaky_relu(conv(torch.cat(features, 1)), LRELU_SLOPE))
        return self.conv5(torch.cat(features, 1)) * RESIDUAL_SCALE + x


class RRDB(nn.Module):
    """Residual in Residual Dense Block: three dense blocks, the sum scaled by beta again."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * RESIDUAL_SCALE + x


class RRDBNet(nn.Module):
    """ESRGAN's generator (Wang et al. 2018) in Real-ESRGAN's key layout (Wang et al. 2021).

    ``conv_first`` -> ``body`` (``num_block`` RRDBs) -> ``conv_body``, added to the first conv's
    features (the long skip) -> ``num_upsample`` x (nearest x2, ``conv_upK``, LeakyReLU) ->
    ``conv_hr`` + LeakyReLU -> ``conv_last``. With ``unshuffle`` 2 or 4 the input is first
    reflect-padded to a multiple of it and pixel-unshuffled (Real-ESRGAN x2plus: 3 -> 12 channels
    into ``conv_first``), the output cropped back. Scale = 2**num_upsample / unshuffle.

    The output is the raw network output (not clamped), as the original computes it."""

    layout = "RRDBNet"

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, *, num_feat: int = 64,
                 num_block: int = 23, num_grow_ch: int = 32, num_upsample: int = 2,
                 unshuffle: int = 1) -> None:
        super().__init__()
        if unshuffle not in (1, 2, 4) or (2**num_upsample) % unshuffle:
            raise ValueError(f"RRDBNet: unshuffle={unshuffle} with num_upsample={num_upsample} "
                             "gives no integer scale (unshuffle is 1, 2 or 4, at most 2**num_upsample)")
        self.hyperparameters = dict(num_in_ch=num_in_ch, num_out_ch=num_out_ch, num_feat=num_feat,
                                    num_block=num_block, num_grow_ch=num_grow_ch,
                                    num_upsample=num_upsample, unshuffle=unshuffle)
        self.scale = 2**num_upsample // unshuffle
        self.size_multiple = unshuffle
        self.num_upsample = num_upsample
        self.conv_first = nn.Conv2d(num_in_ch * unshuffle**2, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        for k in range(1, num_upsample + 1):
            setattr(self, f"conv_up{k}", nn.Conv2d(num_feat, num_feat, 3, 1, 1))
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        out = self.forward_core(pad_to_multiple(x, self.size_multiple))
        return out[..., : h * self.scale, : w * self.scale]

    def forward_core(self, x: torch.Tensor) -> torch.Tensor:
        """The network on an input whose sides are multiples of ``size_multiple`` (what the ONNX
        export traces: the padding stays outside the graph)."""
        if self.size_multiple > 1:
            x = F.pixel_unshuffle(x, self.size_multiple)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for k in range(1, self.num_upsample + 1):
            up = F.interpolate(feat, scale_factor=2, mode="nearest")
            feat = F.leaky_relu(getattr(self, f"conv_up{k}")(up), LRELU_SLOPE)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), LRELU_SLOPE))


class SRVGGNetCompact(nn.Module):
    """Real-ESRGAN's compact SR net (Wang et al. 2021; the realesr-*-v3 models).

    ``body``: conv 3x3 in -> num_feat, PReLU (one slope per channel), then ``num_conv`` x (conv,
    PReLU), then conv num_feat -> out * scale**2; pixel shuffle by ``scale``; plus the input
    upsampled by nearest neighbour, so the body learns the residual over that. All convolutions
    run at the input resolution, which makes it several times cheaper than RRDBNet.

    The output is the raw network output (not clamped), as the original computes it."""

    layout = "SRVGGNetCompact"

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, *, num_feat: int = 64,
                 num_conv: int = 16, upscale: int = 4) -> None:
        super().__init__()
        if num_out_ch != num_in_ch:
            raise ValueError(f"SRVGGNetCompact: num_out_ch={num_out_ch} must equal num_in_ch="
                             f"{num_in_ch} (the upsampled input is added to the output)")
        self.hyperparameters = dict(num_in_ch=num_in_ch, num_out_ch=num_out_ch, num_feat=num_feat,
                                    num_conv=num_conv, upscale=upscale)
        self.scale = upscale
        self.size_multiple = 1
        layers: list[nn.Module] = [nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), nn.PReLU(num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.PReLU(num_feat)]
        layers.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.body = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        out = F.pixel_shuffle(out, self.scale)
        return out + F.interpolate(x, scale_factor=self.scale, mode="nearest")

    def forward_core(self, x: torch.Tensor) -> torch.Tensor:
        """Same as forward (no padding needed); the name the ONNX export traces."""
        return self.forward(x)
