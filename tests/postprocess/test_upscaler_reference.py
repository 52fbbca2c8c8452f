"""sdrt's upscaler networks compute what the originals compute, checked two independent ways on the
same random weights in the published key names:

1. spandrel 0.4.2 (chaiNNer's implementation of ESRGAN / Real-ESRGAN / SRVGGNetCompact, with its own
   key conversion and detection). Its package __init__ imports every architecture, two of which
   import torchvision, which cannot be imported beside the CPU torch here; its ESRGAN and Compact
   modules import neither, so they are loaded under a bare stand-in for the top-level package
   (spandrel's __init__.py does not run). Install with ``pip install --no-deps spandrel==0.4.2``
   (``--no-deps``: its torchvision requirement would replace the CPU torch); skipped without it.
   Tolerance: max |sdrt - spandrel| <= 1e-6 * max(1, max |spandrel|) (bitwise equal when written).
2. a functional formulation written here from the papers' equations with F.conv2d, reading the
   weights by their original names (so the key conversion is checked too), for every layout,
   including sizes spandrel does not support (growth channels other than 32). Tolerance: 1e-5
   relative to the output's magnitude (the same convolutions, possibly in another order of
   summation).
"""
from __future__ import annotations

import importlib.util
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from published_upscalers import (
    PUBLISHED,
    esrgan_old_arch,
    esrgan_rrdb_trunk,
    random_weights,
    realesrgan_rrdbnet,
    srvgg_compact,
)

from sdrt.postprocess import build_upscaler, detect_layout


def sdrt_output(sd, x):
    model = build_upscaler(detect_layout(sd))
    with torch.no_grad():
        return model(x)


def assert_matches(ours, ref, rel):
    assert ours.shape == ref.shape
    err = (ours - ref).abs().max().item()
    assert err <= rel * max(1.0, ref.abs().max().item()), f"max |diff| {err:.3g}"


# --------------------------------------------------------------------------------------------
# 1. spandrel
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spandrel_archs():
    spec = importlib.util.find_spec("spandrel")
    if spec is None:
        pytest.skip("spandrel is not installed (pip install --no-deps spandrel==0.4.2)")
    saved = {k: v for k, v in sys.modules.items() if k == "spandrel" or k.startswith("spandrel.")}
    stand_in = types.ModuleType("spandrel")
    stand_in.__path__ = list(spec.submodule_search_locations)
    sys.modules["spandrel"] = stand_in
    try:
        from spandrel.architectures.Compact import CompactArch
        from spandrel.architectures.ESRGAN import ESRGANArch

        yield {"ESRGAN": ESRGANArch(), "Compact": CompactArch()}
    finally:
        for k in [k for k in sys.modules if k == "spandrel" or k.startswith("spandrel.")]:
            del sys.modules[k]
        sys.modules.update(saved)
        assert "torchvision" not in sys.modules


SPANDREL_CASES = {
    **{name: make for name, (make, _, _) in PUBLISHED.items()},
    "ESRGAN 2019 names (RRDB_trunk)": lambda: esrgan_rrdb_trunk(num_block=3),
    "old arch 2x": lambda: esrgan_old_arch(2, num_block=2),
    "old arch 1x": lambda: esrgan_old_arch(1, num_block=2),
}


@pytest.mark.parametrize("name", list(SPANDREL_CASES))
def test_matches_spandrel(spandrel_archs, name):
    sd = random_weights(SPANDREL_CASES[name](), seed=7)
    arch = spandrel_archs["Compact" if "body.1.weight" in sd else "ESRGAN"]
    reference = arch.load({k: v.clone() for k, v in sd.items()}).model.eval()
    x = torch.rand(2, 3, 11, 14, generator=torch.Generator().manual_seed(1))  # odd: x2plus pads
    with torch.no_grad():
        ref = reference(x)
    assert_matches(sdrt_output(sd, x), ref, 1e-6)


# --------------------------------------------------------------------------------------------
# 2. the papers' equations
# --------------------------------------------------------------------------------------------


def conv(sd, name, x):
    return F.conv2d(x, sd[f"{name}.weight"], sd[f"{name}.bias"], padding=1)


def lrelu(x):
    return F.leaky_relu(x, 0.2)


def rrdbnet_reference(sd, x, names, num_block, n_up, unshuffle=1):
    """ESRGAN: F0 = conv_first(x); RDB(h): h_k = lrelu(conv_k([h, h_1..h_{k-1}])), k < 5,
    out = 0.2 * conv_5([h, h_1..h_4]) + h; RRDB(h) = 0.2 * RDB3(RDB2(RDB1(h))) + h;
    F = F0 + conv_body(RRDB^n(F0)); then per upsampling step lrelu(conv(nearest_x2(F)));
    y = conv_last(lrelu(conv_hr(F))). Real-ESRGAN x2/x1: x pixel-unshuffled first."""
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % unshuffle, (-w) % unshuffle
    if unshuffle > 1:
        x = F.pixel_unshuffle(F.pad(x, (0, pad_w, 0, pad_h), mode="reflect"), unshuffle)
    feat = conv(sd, names["first"], x)
    trunk = feat
    for i in range(num_block):
        block_in = trunk
        for j in (1, 2, 3):
            dense = [trunk]
            for k in range(1, 5):
                dense.append(lrelu(conv(sd, names["rdb"](i, j, k), torch.cat(dense, 1))))
            trunk = 0.2 * conv(sd, names["rdb"](i, j, 5), torch.cat(dense, 1)) + trunk
        trunk = 0.2 * trunk + block_in
    feat = feat + conv(sd, names["body"], trunk)
    for k in range(1, n_up + 1):
        feat = lrelu(conv(sd, names["up"](k), F.interpolate(feat, scale_factor=2, mode="nearest")))
    y = conv(sd, names["last"], lrelu(conv(sd, names["hr"], feat)))
    scale = 2**n_up // unshuffle
    return y[..., : h * scale, : w * scale]


NEW_NAMES = {"first": "conv_first", "rdb": lambda i, j, k: f"body.{i}.rdb{j}.conv{k}", "body": "conv_body",
             "up": lambda k: f"conv_up{k}", "hr": "conv_hr", "last": "conv_last"}
TRUNK_NAMES = {"first": "conv_first", "rdb": lambda i, j, k: f"RRDB_trunk.{i}.RDB{j}.conv{k}",
               "body": "trunk_conv", "up": lambda k: f"upconv{k}", "hr": "HRconv", "last": "conv_last"}


def old_names(num_block, n_up):
    return {"first": "model.0", "rdb": lambda i, j, k: f"model.1.sub.{i}.RDB{j}.conv{k}.0",
            "body": f"model.1.sub.{num_block}", "up": lambda k: f"model.{3 * k}",
            "hr": f"model.{3 * n_up + 2}", "last": f"model.{3 * n_up + 4}"}


def srvgg_reference(sd, x, num_conv, scale):
    """Real-ESRGAN compact: h = PReLU_a(conv(x)) repeated, y = pixel_shuffle(conv(h)) + nearest(x);
    PReLU_a(v) = max(v, 0) + a_c * min(v, 0) with one slope a_c per channel."""
    h = x
    for i in range(num_conv + 1):
        v = conv(sd, f"body.{2 * i}", h)
        h = v.clamp(min=0) + sd[f"body.{2 * i + 1}.weight"].view(1, -1, 1, 1) * v.clamp(max=0)
    y = F.pixel_shuffle(conv(sd, f"body.{2 * num_conv + 2}", h), scale)
    return y + F.interpolate(x, scale_factor=scale, mode="nearest")


EQUATION_CASES = {
    "RealESRGAN_x4plus (23 blocks)": (lambda: realesrgan_rrdbnet(23), NEW_NAMES, dict(num_block=23, n_up=2)),
    "RealESRGAN_x2plus": (lambda: realesrgan_rrdbnet(23, in_ch=12), NEW_NAMES,
                          dict(num_block=23, n_up=2, unshuffle=2)),
    "anime_6B": (lambda: realesrgan_rrdbnet(6), NEW_NAMES, dict(num_block=6, n_up=2)),
    "toy-sized growth 16": (lambda: realesrgan_rrdbnet(2, in_ch=12, nf=32, gc=16), NEW_NAMES,
                            dict(num_block=2, n_up=2, unshuffle=2)),
    "x1 (unshuffle 4)": (lambda: realesrgan_rrdbnet(1, in_ch=48, nf=16, gc=8), NEW_NAMES,
                         dict(num_block=1, n_up=2, unshuffle=4)),
    "old arch 4x": (lambda: esrgan_old_arch(4, 23), old_names(23, 2), dict(num_block=23, n_up=2)),
    "old arch 8x": (lambda: esrgan_old_arch(8, 1, nf=16), old_names(1, 3), dict(num_block=1, n_up=3)),
    "RRDB_trunk": (lambda: esrgan_rrdb_trunk(2), TRUNK_NAMES, dict(num_block=2, n_up=2)),
}


@pytest.mark.parametrize("name", list(EQUATION_CASES))
def test_rrdbnet_matches_equations(name):
    make, names, kwargs = EQUATION_CASES[name]
    sd = random_weights(make(), seed=3)
    x = torch.rand(1, 3, 10, 9, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert_matches(sdrt_output(sd, x), rrdbnet_reference(sd, x, names, **kwargs), 1e-5)


@pytest.mark.parametrize("num_conv,scale", [(32, 4), (16, 4), (3, 2)])
def test_srvgg_matches_equations(num_conv, scale):
    sd = random_weights(srvgg_compact(num_conv, nf=64 if num_conv > 3 else 8, scale=scale), seed=4)
    x = torch.rand(2, 3, 9, 12, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert_matches(sdrt_output(sd, x), srvgg_reference(sd, x, num_conv, scale), 1e-5)
