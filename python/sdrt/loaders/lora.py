"""LoRA and LyCORIS networks on diffusers / transformers modules (A1111's ``<lora:...>``).

File formats (keys, after a module name):
- kohya: ``lora_unet_<module>``, ``lora_te_<module>`` (SD1/SD2 text encoder),
  ``lora_te1_``/``lora_te2_`` (SDXL), with ``.lora_down.weight``/``.lora_up.weight``/``.alpha``;
  LyCORIS types use the same names: LoCon (``lora_*`` on convolutions, ``lora_mid`` for CP),
  LoHa (``hada_*``), LoKr (``lokr_*``). The math is in :mod:`sdrt.loaders.lycoris`.
- diffusers / peft: ``unet.<dotted module>.lora_A.weight``/``lora_B.weight``, ``.lora.down/up``,
  ``.lora_linear_layer.down/up``, the old attention-processor names (``to_q_lora.down``), and
  ``text_encoder.``/``text_encoder_2.``; alpha from ``.alpha`` keys or the
  ``lora_adapter_metadata`` that diffusers writes (peft's ``lora_alpha``/``alpha_pattern``),
  else scale 1 as diffusers does.

Name matching works like kohya's and A1111's: every ``nn.Linear``/``nn.Conv2d`` of a model is
indexed under the underscore form of its dotted name; the UNet also under its LDM / sgm name
(``input_blocks_1_1_...``, from :func:`sdrt.loaders.ldm_layout.unet_key_to_ldm` and the UNet's
config), and text encoders with and without the ``text_model.`` prefix (transformers >= 5.6
flattens ``CLIPTextModel``).

Run-time application patches the weights and keeps a copy of the originals (A1111's way), so
the model runs at base speed and exports as is, and :meth:`AppliedNetworks.remove` restores
the base bit for bit. Applying again to the same models first removes what was applied.

Unknown keys: by default a ValueError naming the file and the first unknown key; with
``strict=False`` they are collected in :attr:`LoraNetwork.unknown_keys` for the caller to warn
about, as A1111 does. Network types A1111 knows but sdrt does not apply (DoRA, IA3, GLoRA, OFT,
norm, full diff) are always refused: skipping them would change the picture silently.
"""
from __future__ import annotations

import json
import math
import os
import re
import threading
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from .ldm_layout import unet_key_to_ldm
from .lycoris import KINDS, NetworkModule, detect_kind, missing_params
from .state_dict import read_safetensors_header, read_state_dict

__all__ = ["AppliedNetworks", "LoraNetwork", "NetworkModule", "apply_networks", "load_network",
           "merge_networks", "module_index"]

UNET = "unet"
TEXT_ENCODER = "text_encoder"
TEXT_ENCODER_2 = "text_encoder_2"

_KOHYA_PREFIXES = {"lora_unet_": UNET, "lora_te_": TEXT_ENCODER, "lora_te1_": TEXT_ENCODER,
                   "lora_te2_": TEXT_ENCODER_2}
_DOTTED_PREFIXES = {"unet.": UNET, "text_encoder.": TEXT_ENCODER, "text_encoder_2.": TEXT_ENCODER_2}
_KNOWN_PARAMS = frozenset().union(*KINDS.values()) | {"alpha"}
# peft / diffusers parameter spellings -> kohya's
_DOTTED_PARAMS = {
    "lora_down.weight": "lora_down.weight", "lora_up.weight": "lora_up.weight", "lora_mid.weight": "lora_mid.weight",
    "lora_A.weight": "lora_down.weight", "lora_B.weight": "lora_up.weight",
    "lora.down.weight": "lora_down.weight", "lora.up.weight": "lora_up.weight",
    "lora_linear_layer.down.weight": "lora_down.weight", "lora_linear_layer.up.weight": "lora_up.weight",
    "lora_magnitude_vector": "dora_scale", "alpha": "alpha",
}
# diffusers' attention-processor LoRA names (``attn1.processor.to_q_lora.down.weight``)
_PROCESSOR_KEY = re.compile(r"^(.*?)(?:\.processor)?\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$")
_PROCESSOR_TARGET = {
    UNET: {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out": "to_out.0"},
    TEXT_ENCODER: {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"},
}
# parameters of network types A1111 knows that are not applied here
_UNSUPPORTED = {
    "dora_scale": "DoRA (weight-decomposed LoRA)", "on_input": "IA3", "a1.weight": "GLoRA",
    "b1.weight": "GLoRA", "oft_blocks": "OFT", "oft_diag": "OFT", "w_norm": "norm", "b_norm": "norm",
    "diff": "LyCORIS full", "diff_b": "LyCORIS full", "lora_up.bias": "LoRA with bias",
}
_PATCHABLE = (nn.Linear, nn.Conv2d)


@dataclass
class LoraNetwork:
    """A parsed network file. ``modules`` maps (component, kohya-style module name) to the
    module; components are ``"unet"``, ``"text_encoder"`` and ``"text_encoder_2"``."""

    name: str
    source: str
    modules: dict[tuple[str, str], NetworkModule]
    metadata: dict[str, str] = field(default_factory=dict)
    unknown_keys: list[str] = field(default_factory=list)

    @property
    def components(self) -> set[str]:
        return {component for component, _ in self.modules}


# --- reading files ----------------------------------------------------------------------------

def _read_file(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and safetensors metadata; pickles only through the restricted unpickler
    (:func:`sdrt.loaders.state_dict.read_state_dict`)."""
    metadata = read_safetensors_header(path).metadata if path.lower().endswith(".safetensors") else {}
    return read_state_dict(path), dict(metadata)


# --- parsing keys -----------------------------------------------------------------------------

def _underscore(name: str) -> str:
    return name.replace(".", "_")


def _split_kohya(key: str) -> tuple[str, str, str] | None:
    """``lora_unet_<name>.<param>`` -> (component, name, param)."""
    module, _, param = key.partition(".")
    for prefix, component in _KOHYA_PREFIXES.items():
        if module.startswith(prefix) and param:
            return component, module[len(prefix):], param
    return None


def _split_dotted(key: str) -> tuple[str, str, str, str] | None:
    """``unet.<dotted name>.<param>`` -> (component, underscore name, dotted name, param)."""
    for prefix, component in _DOTTED_PREFIXES.items():
        if key.startswith(prefix):
            rest = key[len(prefix):]
            break
    else:
        return None
    m = _PROCESSOR_KEY.match(rest)
    if m:
        targets = _PROCESSOR_TARGET[UNET if component == UNET else TEXT_ENCODER]
        dotted = f"{m[1]}.{targets[m[2]]}"
        return component, _underscore(dotted), dotted, f"lora_{m[3]}.weight"
    for suffix, param in _DOTTED_PARAMS.items():
        if rest.endswith("." + suffix):
            dotted = rest[: -len(suffix) - 1]
            return component, _underscore(dotted), dotted, param
    parts = rest.rsplit(".", 1)  # a LyCORIS parameter on a dotted name, or an unknown one
    if len(parts) == 2 and (parts[1] in _KNOWN_PARAMS or parts[1] in _UNSUPPORTED):
        return component, _underscore(parts[0]), parts[0], parts[1]
    return None


@dataclass
class _Group:
    key: str  # the module name as written, for messages
    first_key: str
    dotted: str | None
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)


def _group_keys(state: Mapping[str, torch.Tensor], source: str, strict: bool
                ) -> tuple[dict[tuple[str, str], _Group], list[str]]:
    groups: dict[tuple[str, str], _Group] = {}
    unknown: list[str] = []
    for key, tensor in state.items():
        kohya = _split_kohya(key)
        if kohya:
            component, name, param = kohya
            dotted, module_key = None, key.partition(".")[0]
        else:
            dotted_split = _split_dotted(key)
            if dotted_split is None:
                unknown.append(key)
                continue
            component, name, dotted, param = dotted_split
            module_key = f"{component}.{dotted}"
        if param in _UNSUPPORTED:
            raise ValueError(f"{source}: key {key!r} belongs to a {_UNSUPPORTED[param]} network, "
                             "which sdrt does not apply")
        if param not in _KNOWN_PARAMS or not isinstance(tensor, torch.Tensor):
            unknown.append(key)
            continue
        group = groups.setdefault((component, name), _Group(module_key, key, dotted))
        group.tensors[param] = tensor
    if unknown and strict:
        raise ValueError(f"{source}: unknown key {unknown[0]!r} ({len(unknown)} unknown keys in all)")
    return groups, unknown


def _peft_alpha(metadata: Mapping[str, str], component: str, dotted: str, rank: int) -> float | None:
    """Alpha from diffusers' ``lora_adapter_metadata`` (peft LoraConfig fields per component):
    ``alpha_pattern`` entries match a module-name suffix as peft matches them; rsLoRA divides
    by sqrt(rank), which is alpha * sqrt(rank) / rank."""
    raw = metadata.get("lora_adapter_metadata")
    if not raw:
        return None
    try:
        config = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"lora_adapter_metadata is not valid JSON ({exc})") from None
    alpha = config.get(f"{component}.lora_alpha")
    for pattern, value in (config.get(f"{component}.alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", dotted):
            alpha = value
            break
    if alpha is None:
        return None
    return float(alpha) * math.sqrt(rank) if config.get(f"{component}.use_rslora") else float(alpha)


def _build_module(group: _Group, component: str, metadata: Mapping[str, str], source: str) -> NetworkModule:
    tensors = dict(group.tensors)
    alpha_t = tensors.pop("alpha", None)
    try:
        kind = detect_kind(set(tensors))
    except ValueError as e:
        raise ValueError(f"{source}: key {group.first_key!r}: {e}") from None
    missing = missing_params(kind, set(tensors))
    if missing:
        raise ValueError(f"{source}: {kind} module {group.key!r} lacks {', '.join(missing)}")
    module = NetworkModule(group.key, kind, tensors, None if alpha_t is None else float(alpha_t.item()))
    if alpha_t is None and group.dotted is not None and module.rank:
        try:
            alpha = _peft_alpha(metadata, component, group.dotted, module.rank)
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None
        if alpha is not None:
            module = NetworkModule(group.key, kind, tensors, alpha)
    return module


def load_network(path_or_state_dict: str | os.PathLike[str] | Mapping[str, torch.Tensor], *,
                 name: str | None = None, strict: bool = True) -> LoraNetwork:
    """Parse a LoRA / LyCORIS file (``.safetensors``, or a pickle read with restricted
    unpickling) or a state dict into modules, one per targeted model module, with alpha.

    ``name`` defaults to the file name without extension (A1111's network name). Raises
    ValueError naming the file and key for unknown keys (unless ``strict=False``), unsupported
    network types and incomplete modules.
    """
    if isinstance(path_or_state_dict, Mapping):
        state, metadata, source = dict(path_or_state_dict), {}, "<state dict>"
    else:
        source = os.fspath(path_or_state_dict)
        state, metadata = _read_file(source)
    if name is None:
        name = os.path.splitext(os.path.basename(source))[0] if source != "<state dict>" else "state_dict"
    groups, unknown = _group_keys(state, source, strict)
    modules = {target: _build_module(group, target[0], metadata, source) for target, group in groups.items()}
    return LoraNetwork(name, source, modules, metadata, unknown)


# --- model module names -----------------------------------------------------------------------

def _ldm_name(name: str, config: Mapping[str, object]) -> str | None:
    """The LDM (compvis / sgm) name of a diffusers UNet module, or None where the layout has
    none (or the UNet's config is one the LDM layout cannot express)."""
    try:
        return unet_key_to_ldm(name + ".weight", config).removesuffix(".weight")
    except ValueError:
        return None


def _aliases(name: str, component: str, config: Mapping[str, object] | None) -> list[str]:
    if component == UNET:
        ldm = _ldm_name(name, config or {})
        return [name] if ldm is None else [name, ldm]
    if name.startswith("text_model."):
        return [name, name[len("text_model."):]]
    return [name, "text_model." + name]


def module_index(model: nn.Module, component: str) -> dict[str, tuple[str, nn.Module]]:
    """kohya-style (underscore) names of the model's Linear / Conv2d modules, aliases included,
    -> (dotted name, module)."""
    config = getattr(model, "config", None) if component == UNET else None
    index: dict[str, tuple[str, nn.Module]] = {}
    for name, module in model.named_modules():
        if isinstance(module, _PATCHABLE):
            for alias in _aliases(name, component, config):
                index.setdefault(_underscore(alias), (name, module))
    return index


# --- matching networks to models --------------------------------------------------------------

def _strip_unit_kernel(shape: tuple[int, ...]) -> tuple[int, ...]:
    while len(shape) > 2 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def _fits(delta: tuple[int, ...], weight: tuple[int, ...]) -> bool:
    """Equal shapes; or a Linear-shaped delta on a 1x1 conv (and back); or a LyCORIS delta kept
    flat as (out, in * k * k)."""
    if delta == weight:
        return True
    if math.prod(delta) != math.prod(weight) or delta[0] != weight[0]:
        return False
    return _strip_unit_kernel(delta) == _strip_unit_kernel(weight) or len(delta) == 2


@dataclass
class _Patch:
    component: str
    module_name: str
    weight: nn.Parameter
    parts: list[tuple[NetworkModule, float]] = field(default_factory=list)


NetworkSpec = tuple[LoraNetwork, float, float]  # (network, text-encoder weight, UNet weight)


def _models(unet: nn.Module | None, text_encoders: Mapping[str, nn.Module] | None) -> dict[str, nn.Module]:
    models = {name: m for name, m in (text_encoders or {}).items() if m is not None}
    if unet is not None:
        models[UNET] = unet
    return models


def _plan(models: Mapping[str, nn.Module], networks: Iterable[NetworkSpec]) -> list[_Patch]:
    """Match every module of every network to a model weight, checking names and shapes before
    anything is touched; a ValueError names the file and the first key that does not fit."""
    indexes = {component: module_index(model, component) for component, model in models.items()}
    patches: dict[int, _Patch] = {}
    for network, te_weight, unet_weight in networks:
        seen: set[int] = set()
        for (component, name), module in network.modules.items():
            if component not in indexes:
                raise ValueError(f"{network.source}: key {module.key!r} is for the {component}, "
                                 f"which was not given (have: {', '.join(sorted(indexes))})")
            found = indexes[component].get(name)
            if found is None:
                raise ValueError(f"{network.source}: key {module.key!r} matches no module of the {component} "
                                 f"({type(models[component]).__name__})")
            module_name, target = found
            try:
                shape = module.shape()
            except ValueError as e:
                raise ValueError(f"{network.source}: {e}") from None
            weight_shape = tuple(target.weight.shape)
            if not _fits(shape, weight_shape):
                raise ValueError(f"{network.source}: key {module.key!r} has a {module.kind} delta of shape "
                                 f"{shape}, but {component} module {module_name!r} has weight {weight_shape}")
            if id(target.weight) in seen:
                raise ValueError(f"{network.source}: key {module.key!r} names {component} module "
                                 f"{module_name!r} a second time")
            seen.add(id(target.weight))
            patch = patches.setdefault(id(target.weight), _Patch(component, module_name, target.weight))
            patch.parts.append((module, float(unet_weight if component == UNET else te_weight)))
    return [p for p in patches.values() if any(mult != 0.0 for _, mult in p.parts)]


def _patched_weight(base: torch.Tensor, parts: list[tuple[NetworkModule, float]]) -> torch.Tensor:
    """``W + sum(weight * dW)``, summed in float32 and cast back to the weight's dtype."""
    w = base.detach().to(torch.float32, copy=True)
    for module, mult in parts:
        if mult != 0.0:
            w += mult * module.delta(base.device).reshape(base.shape)
    return w.to(base.dtype)


# --- applying ---------------------------------------------------------------------------------

_LOCK = threading.RLock()
_ACTIVE: weakref.WeakKeyDictionary[nn.Module, AppliedNetworks] = weakref.WeakKeyDictionary()


class AppliedNetworks:
    """Networks applied at run time; :meth:`remove` copies the saved weights back, so the model
    is bit-identical to the base again. Also a context manager."""

    def __init__(self, networks: list[NetworkSpec], models: list[nn.Module],
                 backups: list[tuple[str, str, nn.Parameter, torch.Tensor]]):
        self.networks = networks
        self._models = [weakref.ref(m) for m in models]
        self._backups = backups

    @property
    def active(self) -> bool:
        return bool(self._models) and any(_ACTIVE.get(m()) is self for m in self._models if m() is not None)

    @property
    def patched(self) -> list[tuple[str, str]]:
        """(component, module name) of every patched weight."""
        return [(component, name) for component, name, _, _ in self._backups]

    def remove(self) -> None:
        """Restore the base weights; a no-op once removed or replaced by a later application."""
        with _LOCK:
            if not self.active:
                return
            with torch.no_grad():
                for _, _, weight, backup in reversed(self._backups):
                    weight.copy_(backup)
            for ref in self._models:
                model = ref()
                if model is not None and _ACTIVE.get(model) is self:
                    del _ACTIVE[model]
            self._backups = []

    def __enter__(self) -> AppliedNetworks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def apply_networks(unet: nn.Module | None, text_encoders: Mapping[str, nn.Module] | None,
                   networks: Iterable[NetworkSpec]) -> AppliedNetworks:
    """Apply ``(network, te_weight, unet_weight)`` entries at run time (A1111's
    ``<lora:name:te_weight:unet_weight>``). ``text_encoders`` maps ``"text_encoder"`` /
    ``"text_encoder_2"`` to modules. Every key is matched before any weight changes: a
    ValueError leaves the models as they were. Networks applied earlier to any of these models
    are removed first, so applying twice never stacks."""
    networks = list(networks)
    models = _models(unet, text_encoders)
    patches = _plan(models, networks)
    with _LOCK:
        for model in models.values():
            previous = _ACTIVE.get(model)
            if previous is not None:
                previous.remove()
        backups, news = [], []
        with torch.no_grad():
            # every new weight first: a failure here (out of memory) leaves the model untouched
            for patch in patches:
                backup = patch.weight.detach().clone()
                news.append(_patched_weight(backup, patch.parts))
                backups.append((patch.component, patch.module_name, patch.weight, backup))
            for (_, _, weight, _), new in zip(backups, news):
                weight.copy_(new)
        handle = AppliedNetworks(networks, list(models.values()), backups)
        for model in models.values():
            _ACTIVE[model] = handle
    return handle


def merge_networks(unet: nn.Module | None, text_encoders: Mapping[str, nn.Module] | None,
                   networks: Iterable[NetworkSpec]) -> None:
    """Merge permanently (``W += weight * dW``, for export); same matching checks as
    :func:`apply_networks`. Refused while run-time networks are applied to these models, whose
    backups would otherwise go stale."""
    networks = list(networks)
    models = _models(unet, text_encoders)
    with _LOCK:
        if any(model in _ACTIVE for model in models.values()):
            raise RuntimeError("remove the run-time networks (AppliedNetworks.remove()) before merging")
        patches = _plan(models, networks)
        with torch.no_grad():
            for patch in patches:
                patch.weight.copy_(_patched_weight(patch.weight, patch.parts))
