"""Which upscaler a state dict holds, read from its key names and tensor shapes alone.

Layouts (each converted to the key names of :mod:`sdrt.postprocess.esrgan_nets`):

* ``"RRDBNet"``: Real-ESRGAN / BasicSR's ESRGAN generator (``conv_first``, ``body.N.rdb1.conv1``,
  ``conv_body``, ``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last``): RealESRGAN_x4plus (23
  blocks), RealESRGAN_x4plus_anime_6B (6 blocks), RealESRGAN_x2plus (pixel-unshuffled input:
  ``conv_first`` takes 12 channels).
* ``"ESRGAN (old arch)"``: the original ESRGAN release and most community ".pth" models
  (``model.0``, ``model.1.sub.N.RDB1.conv1.0``, the upsampling convs at ``model.3``, ``model.6``,
  ..., then the HR conv and the last conv): the modules sat in one flattened ``nn.Sequential``
  where every upsampling step took three slots (upsample, conv, LeakyReLU).
* ``"ESRGAN (RRDB_trunk)"``: the 2019 ESRGAN repository's names, also used by BSRGAN
  (``RRDB_trunk.N.RDB1.conv1``, ``trunk_conv``, ``upconv1``, ``HRconv``).
* ``"SRVGGNetCompact"``: Real-ESRGAN's compact net (``body.0`` conv, ``body.1`` PReLU, ...):
  realesr-general-x4v3 (32 convs), realesr-animevideov3 (16 convs).

Hyper-parameters (features, growth channels, blocks, upsampling steps, pixel-unshuffle, channels)
come from the tensor shapes; the caller builds the network and loads the converted dict with
``strict=True``, so every remaining key and shape is checked there.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from sdrt.loaders.state_dict import ModelFileError, PathLike

__all__ = ["LAYOUTS", "UpscalerSpec", "UpscalerFileError", "UnknownUpscalerLayout", "detect_layout",
           "unwrap_upscaler_checkpoint"]

StateDict = dict[str, torch.Tensor]


class UpscalerFileError(ModelFileError):
    """A file that is not a usable upscaler; the message names the file (a ValueError)."""


class UnknownUpscalerLayout(UpscalerFileError):
    """No known layout matches the state dict; ``tried`` maps each layout to why it did not."""

    def __init__(self, path: PathLike, tried: Mapping[str, str], keys: list[str]) -> None:
        self.tried = dict(tried)
        self.keys_sample = keys[:5]
        reasons = "; ".join(f"{name}: {why}" for name, why in self.tried.items())
        sample = ", ".join(repr(k) for k in self.keys_sample) or "none"
        problem = (f"not an upscaler model this loader knows (the file holds {len(keys)} tensors, "
                   f"first keys {sample}). Layouts tried: {reasons}")
        super().__init__(path, problem)

    def __reduce__(self):
        return (type(self), (self.path, self.tried, self.keys_sample))


@dataclass(frozen=True)
class UpscalerSpec:
    """A recognised upscaler: the file's ``layout``, the sdrt ``network`` class name and its
    constructor ``params``, and the state dict renamed to that network's keys."""

    layout: str
    network: str
    params: dict
    state_dict: StateDict = field(repr=False)


class _NoMatch(Exception):
    """Why one layout does not fit (collected into UnknownUpscalerLayout)."""


# --------------------------------------------------------------------------------------------
# unwrapping
# --------------------------------------------------------------------------------------------


def unwrap_upscaler_checkpoint(obj: object) -> object:
    """The weights inside a checkpoint as Real-ESRGAN / BasicSR save them: ``{"params_ema": sd}``
    (the EMA weights, which are the ones to use) or ``{"params": sd}``; other objects unchanged.
    ``"state_dict"`` nesting is left to :func:`sdrt.loaders.state_dict.unwrap_state_dict`."""
    if isinstance(obj, Mapping):
        for name in ("params_ema", "params"):
            if isinstance(obj.get(name), Mapping):
                return obj[name]
    return obj


def _strip_module_prefix(sd: StateDict) -> StateDict:
    """Weights saved from ``nn.DataParallel`` carry ``module.`` on every key."""
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}
    return sd


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _weight(sd: StateDict, key: str, ndim: int = 4) -> torch.Tensor:
    if key not in sd:
        raise _NoMatch(f"no key {key!r}")
    t = sd[key]
    if t.ndim != ndim:
        raise _NoMatch(f"{key!r} has shape {tuple(t.shape)}, expected {ndim} dimensions")
    return t


def _indices(sd: StateDict, pattern: str) -> list[int]:
    """The sorted distinct integers captured by `pattern` (one group) over the keys."""
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in sd if (m := rx.fullmatch(k))})


def _consecutive(found: list[int], start: int, what: str) -> int:
    """How many of start, start+1, ... are present; an error if some are missing."""
    if not found or found != list(range(start, start + len(found))):
        raise _NoMatch(f"{what} numbered {found[:8]}, expected {start}, {start + 1}, ...")
    return len(found)


def _unshuffle_factor(in_ch: int, out_ch: int) -> tuple[int, int]:
    """(unshuffle, true input channels) from conv_first's input vs conv_last's output channels:
    Real-ESRGAN x2 models see 4x, x1 models 16x the channels (space-to-depth by 2 or 4)."""
    for factor in (2, 4):
        if in_ch == out_ch * factor * factor:
            return factor, out_ch
    return 1, in_ch


# --------------------------------------------------------------------------------------------
# RRDBNet family
# --------------------------------------------------------------------------------------------


def _rrdbnet_params(sd: StateDict) -> dict:
    """Constructor arguments of :class:`RRDBNet` from a dict in its key names."""
    first = _weight(sd, "conv_first.weight")
    grow = _weight(sd, "body.0.rdb1.conv1.weight")
    last = _weight(sd, "conv_last.weight")
    blocks = _consecutive(_indices(sd, r"body\.(\d+)\.rdb1\.conv1\.weight"), 0, "RRDB blocks")
    ups = _indices(sd, r"conv_up(\d+)\.weight")
    num_upsample = _consecutive(ups, 1, "upsampling convs") if ups else 0
    unshuffle, in_ch = _unshuffle_factor(first.shape[1], last.shape[0])
    if (2**num_upsample) % unshuffle:
        raise _NoMatch(f"{num_upsample} upsampling steps cannot undo a pixel-unshuffle by {unshuffle}")
    return dict(num_in_ch=in_ch, num_out_ch=int(last.shape[0]), num_feat=int(first.shape[0]),
                num_block=blocks, num_grow_ch=int(grow.shape[0]), num_upsample=num_upsample,
                unshuffle=unshuffle)


def _rrdbnet(sd: StateDict) -> UpscalerSpec:
    _weight(sd, "conv_first.weight")
    _weight(sd, "body.0.rdb1.conv1.weight")
    return UpscalerSpec("RRDBNet", "RRDBNet", _rrdbnet_params(sd), sd)


def _old_esrgan_key(key: str, n_up: int, n_block: int) -> str | None:
    """The RRDBNet name of an old-arch key (None: not a key of that layout)."""
    m = re.fullmatch(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)", key)
    if m:
        return f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"
    m = re.fullmatch(r"model\.(\d+)\.(weight|bias)", key)
    if m is None:
        m2 = re.fullmatch(r"model\.1\.sub\.(\d+)\.(weight|bias)", key)
        return f"conv_body.{m2[2]}" if m2 and int(m2[1]) == n_block else None
    slot = int(m[1])
    names = {0: "conv_first", 3 * n_up + 2: "conv_hr", 3 * n_up + 4: "conv_last"}
    names.update({3 * k: f"conv_up{k}" for k in range(1, n_up + 1)})
    return f"{names[slot]}.{m[2]}" if slot in names else None


def _old_esrgan(sd: StateDict) -> UpscalerSpec:
    _weight(sd, "model.0.weight")
    _weight(sd, "model.1.sub.0.RDB1.conv1.0.weight")
    n_block = _consecutive(_indices(sd, r"model\.1\.sub\.(\d+)\.RDB1\.conv1\.0\.weight"), 0, "RRDB blocks")
    last_slot = max(_indices(sd, r"model\.(\d+)\.weight"))
    n_up, rest = divmod(last_slot - 4, 3)
    if rest or n_up < 0:
        raise _NoMatch(f"the last conv is at model.{last_slot}; expected model.{{3k + 4}} "
                       "(k upsampling steps)")
    converted, unknown = {}, []
    for key, value in sd.items():
        new = _old_esrgan_key(key, n_up, n_block)
        if new is None:
            unknown.append(key)
        else:
            converted[new] = value
    if unknown:
        raise _NoMatch(f"keys outside the layout: {unknown[:4]}")
    return UpscalerSpec("ESRGAN (old arch)", "RRDBNet", _rrdbnet_params(converted), converted)


_TRUNK_RENAMES = ((r"RRDB_trunk\.", "body."), (r"\.RDB(\d)\.", r".rdb\1."), (r"^trunk_conv\.", "conv_body."),
                  (r"^upconv(\d)\.", r"conv_up\1."), (r"^HRconv\.", "conv_hr."))


def _rrdb_trunk(sd: StateDict) -> UpscalerSpec:
    _weight(sd, "conv_first.weight")
    _weight(sd, "RRDB_trunk.0.RDB1.conv1.weight")
    converted = {}
    for key, value in sd.items():
        for pattern, repl in _TRUNK_RENAMES:
            key = re.sub(pattern, repl, key)
        converted[key] = value
    return UpscalerSpec("ESRGAN (RRDB_trunk)", "RRDBNet", _rrdbnet_params(converted), converted)


# --------------------------------------------------------------------------------------------
# SRVGGNetCompact
# --------------------------------------------------------------------------------------------


def _srvgg(sd: StateDict) -> UpscalerSpec:
    first = _weight(sd, "body.0.weight")
    _weight(sd, "body.1.weight", ndim=1)
    convs = [i for i in _indices(sd, r"body\.(\d+)\.weight") if sd[f"body.{i}.weight"].ndim == 4]
    last = convs[-1]
    if convs != list(range(0, last + 1, 2)) or last < 2:
        raise _NoMatch(f"convs at body.{convs[:6]}..., expected body.0, body.2, ..., body.2n+2")
    for i in range(1, last, 2):  # ReLU / LeakyReLU variants store no weights and can't be told apart
        _weight(sd, f"body.{i}.weight", ndim=1)
    in_ch = int(first.shape[1])
    out_total = int(sd[f"body.{last}.weight"].shape[0])
    scale = math.isqrt(out_total // in_ch) if out_total % in_ch == 0 else 0
    if scale < 1 or scale * scale * in_ch != out_total:
        raise _NoMatch(f"the last conv gives {out_total} channels, not {in_ch} x scale**2")
    params = dict(num_in_ch=in_ch, num_out_ch=in_ch, num_feat=int(first.shape[0]),
                  num_conv=(last - 2) // 2, upscale=scale)
    return UpscalerSpec("SRVGGNetCompact", "SRVGGNetCompact", params, sd)


# --------------------------------------------------------------------------------------------
# detection
# --------------------------------------------------------------------------------------------

_DETECTORS: dict[str, Callable[[StateDict], UpscalerSpec]] = {
    "RRDBNet": _rrdbnet,
    "ESRGAN (old arch)": _old_esrgan,
    "ESRGAN (RRDB_trunk)": _rrdb_trunk,
    "SRVGGNetCompact": _srvgg,
}
LAYOUTS: tuple[str, ...] = tuple(_DETECTORS)


def detect_layout(state_dict: Mapping[str, torch.Tensor], path: PathLike = "<state dict>") -> UpscalerSpec:
    """The layout of an upscaler state dict (already unwrapped from ``params_ema``/``params``),
    its hyper-parameters and the dict renamed to sdrt's keys. Raises :class:`UnknownUpscalerLayout`
    naming `path`, each layout tried and why it did not match."""
    sd = _strip_module_prefix(dict(state_dict))
    tried: dict[str, str] = {}
    for name, detector in _DETECTORS.items():
        try:
            return detector(sd)
        except _NoMatch as why:
            tried[name] = str(why)
    raise UnknownUpscalerLayout(path, tried, list(sd))
