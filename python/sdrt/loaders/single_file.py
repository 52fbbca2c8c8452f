"""Single-file checkpoints (A1111's models/Stable-diffusion/*.safetensors | *.ckpt) <-> diffusers modules.

Loading: the architecture is detected from the keys and shapes (header only for safetensors), the
tensors are read safely (``state_dict.read_state_dict``), diffusers' own converters map them onto
modules built from the configs shipped in ``sdrt.models.architectures``, and every module must
take every one of its weights (strict): a mismatch names the file and the first bad key before the
pipeline exists. Modules are built on the meta device and take the file's tensors directly, so a
4 GB checkpoint is not allocated twice.

Saving writes the original layout (``ldm_layout``) with Stability's ``modelspec.architecture``
metadata, so A1111 and sdrt find the architecture again.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import torch

from ..models.architectures import ARCHITECTURES, Architecture, detect_architecture
from . import ldm_layout
from .state_dict import ModelFileError, read_safetensors_header, read_state_dict


SCALING_FACTOR_KEY = "sdrt.vae_scaling_factor"


@dataclass
class Checkpoint:
    """The modules of a single-file checkpoint, as diffusers components."""
    architecture: Architecture
    unet: Any
    vae: Any
    text_encoders: dict[str, Any]
    path: Optional[str] = None
    unused_keys: list[str] = field(default_factory=list)  # e.g. EMA copies, alphas_cumprod buffers

    @property
    def scheduler_config(self) -> dict:
        return dict(self.architecture.scheduler)


def read_shapes(path: str) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Keys -> shapes (and safetensors metadata) without reading the tensors where the format allows."""
    if str(path).lower().endswith(".safetensors"):
        header = read_safetensors_header(path)
        return {k: tuple(t[1]) for k, t in header.tensors.items()}, dict(header.metadata)
    state = read_state_dict(path)
    return {k: tuple(v.shape) for k, v in state.items()}, {}


def load_checkpoint(path: str, *, dtype: torch.dtype = torch.float32,
                    architecture: str | Architecture | None = None) -> Checkpoint:
    """A single-file checkpoint -> modules. `architecture` (a name in ARCHITECTURES, or an
    Architecture) overrides detection."""
    path = os.fspath(path)
    shapes, metadata = read_shapes(path)
    if isinstance(architecture, Architecture):
        arch = architecture
    elif architecture is not None:
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture={architecture!r} is unknown; valid: {', '.join(ARCHITECTURES)}")
        arch = ARCHITECTURES[architecture]
    else:
        arch = detect_architecture(shapes, metadata, source=path)
    if path.lower().endswith(".safetensors"):
        # a dry run on meta tensors of the header's shapes: a file that does not fit is refused
        # (naming the key) before any tensor data is read
        _build(arch, {k: torch.empty(v, device="meta") for k, v in shapes.items()}, path, metadata)
    state = read_state_dict(path, dtype=dtype)
    unet, vae, text_encoders, used = _build(arch, state, path, metadata)
    if architecture is None and arch.name == "sd2" and _v_prediction(metadata, unet):
        arch = ARCHITECTURES["sd2-v"]
        unet = _build_unet(arch, state, path, set())  # its own config (768, attention upcast), same tensors
    return Checkpoint(arch, unet, vae, text_encoders, path, sorted(set(state) - used))


def _v_prediction(metadata: Mapping[str, str] | None, unet) -> bool:
    """SD2 512-base (epsilon) or 768-v: the file's label when it has one, else A1111's test."""
    label = (metadata or {}).get("modelspec.prediction_type")
    if label is not None:
        return label == "v"
    if (metadata or {}).get("modelspec.architecture") is not None:
        return False  # labelled, and the label said 512-base
    return uses_v_prediction(unet)


def _build(arch: Architecture, state, path: str, metadata) -> tuple[Any, Any, dict, set]:
    used: set[str] = set()
    unet = _build_unet(arch, state, path, used)
    vae = _build_vae(arch, state, path, used, metadata or {})
    text_encoders = _build_text_encoders(arch, state, path, used)
    return unet, vae, text_encoders, used


def load_vae_file(path: str, *, dtype: torch.dtype = torch.float32, config: Mapping[str, Any] | None = None):
    """A VAE file (A1111's models/VAE: original layout, keys with or without first_stage_model.) ->
    AutoencoderKL with `config` (default SD's VAE). A full checkpoint also works: its VAE is taken."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    from ..models.architectures import SD_VAE

    path = os.fspath(path)
    state = read_state_dict(path, dtype=dtype)
    if not any(k.startswith(ldm_layout.VAE_PREFIX) for k in state):
        if not any(k.startswith(("encoder.", "decoder.")) for k in state):
            raise ModelFileError(path, "not a VAE (no encoder./decoder. or first_stage_model. keys)",
                                 key=next(iter(state), None))
        state = {ldm_layout.VAE_PREFIX + k: v for k, v in state.items()}
    config = dict(SD_VAE if config is None else config)
    vae = _on_meta(lambda: AutoencoderKL(**{k: v for k, v in config.items() if not k.startswith("_")}))
    _strict_load(vae, convert_ldm_vae_checkpoint(state, vae.config), path, "VAE")
    return vae


def uses_v_prediction(unet) -> bool:
    """A1111's test for SD2 checkpoints (is_using_v_parameterization_for_sd2): at t = 999 on a flat
    input, an epsilon model predicts about the input itself, a v model about its negative."""
    param = next(unet.parameters())
    with torch.no_grad():
        x = torch.full((1, unet.config.in_channels, 8, 8), 0.5, dtype=param.dtype)
        context = torch.full((1, 2, unet.config.cross_attention_dim), 0.5, dtype=param.dtype)
        out = unet(x, torch.tensor([999]), encoder_hidden_states=context).sample
    return float((out - x).float().mean()) < -1


def _strict_load(module, converted: Mapping[str, torch.Tensor], path: str, what: str) -> None:
    expected = module.state_dict()
    missing = [k for k in expected if k not in converted]
    unexpected = [k for k in converted if k not in expected]
    if missing or unexpected:
        first = missing[0] if missing else unexpected[0]
        raise ModelFileError(path, f"the {what} weights do not fit the detected architecture ({len(missing)} "
                             f"missing, {len(unexpected)} unexpected; first {'missing' if missing else 'unexpected'})",
                             key=first)
    for key, value in converted.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ModelFileError(path, f"{what} weight has shape {tuple(value.shape)}; the architecture needs "
                                 f"{tuple(expected[key].shape)}", key=key)
    module.load_state_dict(dict(converted), strict=True, assign=True)
    _materialise_buffers(module)
    module.eval().requires_grad_(False)


def _materialise_buffers(module) -> None:
    """Modules are built on the meta device; buffers that are not weights (CLIP's position ids) are
    recreated here."""
    for name, buf in list(module.named_buffers()):
        if not buf.is_meta:
            continue
        owner_name, _, attr = name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        if attr != "position_ids":
            raise RuntimeError(f"buffer {name!r} has no value after loading")
        owner.register_buffer(attr, torch.arange(buf.shape[-1]).expand(buf.shape), persistent=False)


def _on_meta(factory):
    with torch.device("meta"):
        return factory()


def _build_unet(arch: Architecture, state, path, used: set) -> Any:
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    unet = _on_meta(lambda: UNet2DConditionModel(**arch.unet))
    converted = convert_ldm_unet_checkpoint(state, unet.config)
    used.update(k for k in state if k.startswith(ldm_layout.UNET_PREFIX))
    _strict_load(unet, converted, path, "UNet")
    return unet


def _build_vae(arch: Architecture, state, path, used: set, metadata: Mapping[str, str]) -> Any:
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    config = dict(arch.vae)
    if SCALING_FACTOR_KEY in metadata:  # a measured factor (the toy's) travels with the file
        config["scaling_factor"] = float(metadata[SCALING_FACTOR_KEY])
    vae = _on_meta(lambda: AutoencoderKL(**config))
    if not any(k.startswith(ldm_layout.VAE_PREFIX) for k in state):
        raise ModelFileError(path, f"no VAE weights ({ldm_layout.VAE_PREFIX}*); a file without them needs vae=")
    converted = convert_ldm_vae_checkpoint(state, vae.config)
    used.update(k for k in state if k.startswith(ldm_layout.VAE_PREFIX))
    _strict_load(vae, converted, path, "VAE")
    return vae


def _build_text_encoders(arch: Architecture, state, path, used: set) -> dict[str, Any]:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    out = {}
    for name, config in arch.text_encoders.items():
        cls = CLIPTextModelWithProjection if name == "text_encoder_2" else CLIPTextModel
        model = _on_meta(lambda: cls(CLIPTextConfig(**config)))
        prefix = ldm_layout.text_encoder_prefix(arch.family, name)
        if ldm_layout.is_open_clip(arch.family, name):
            converted = _open_clip(model, state, prefix)
        else:
            converted = _clip(model, state, prefix)
        used.update(k for k in state if k.startswith(prefix) or k.startswith(prefix.replace("text_model.", "")))
        _strict_load(model, converted, path, f"text encoder ({name})")
        out[name] = model
    return out


def _flatten_for(model, converted: dict) -> dict:
    """transformers >= 5.6 flattened CLIPTextModel (no .text_model); the converters use the nested names."""
    if hasattr(model, "text_model"):
        return converted
    return {k.removeprefix("text_model."): v for k, v in converted.items()}


def _clip(model, state, prefix: str) -> dict:
    # older checkpoints omit "text_model." (transformers < 4.22 layout)
    short = prefix.replace("text_model.", "")
    converted = {}
    for key, value in state.items():
        if key.startswith(prefix):
            converted["text_model." + key[len(prefix):]] = value
        elif key.startswith(short):
            converted["text_model." + key[len(short):]] = value
    converted = {k: v for k, v in converted.items() if not k.endswith("position_ids")}
    return _flatten_for(model, converted)


def _open_clip(model, state, prefix: str) -> dict:
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint

    converted = convert_open_clip_checkpoint(model, state, prefix=prefix)
    layers = model.config.num_hidden_layers
    # SD2 keeps OpenCLIP's 24th layer, which its penultimate-layer output never reaches
    converted = {k: v for k, v in converted.items()
                 if not k.startswith(f"text_model.encoder.layers.{layers}.") and not k.endswith("position_ids")}
    if not hasattr(model, "text_projection"):
        converted.pop("text_projection.weight", None)
    return _flatten_for(model, converted)


def save_checkpoint(path: str, architecture: Architecture, unet, vae, text_encoders: Mapping[str, Any], *,
                    dtype: torch.dtype | None = torch.float16) -> None:
    """Write an A1111-loadable single .safetensors file in the original layout."""
    from safetensors.torch import save_file

    if not str(path).lower().endswith(".safetensors"):
        raise ValueError(f"{path}: single files are written as .safetensors")
    missing = [name for name in architecture.text_encoders if name not in text_encoders]
    if missing:
        raise ValueError(f"{architecture.name} needs text encoders {', '.join(architecture.text_encoders)}; "
                         f"missing: {', '.join(missing)}")
    state = {}
    state.update(ldm_layout.unet_to_ldm(unet.state_dict(), unet.config))
    state.update(ldm_layout.vae_to_ldm(vae.state_dict(), vae.config))
    for name in architecture.text_encoders:
        prefix, weights = ldm_layout.text_encoder_prefix(architecture.family, name), text_encoders[name].state_dict()
        if ldm_layout.is_open_clip(architecture.family, name):
            state.update(ldm_layout.open_clip_to_ldm(weights, prefix))
        else:
            state.update(ldm_layout.clip_to_ldm(weights, prefix))
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    metadata = {"modelspec.architecture": architecture.modelspec,
                "modelspec.prediction_type": "v" if architecture.prediction_type == "v_prediction" else "epsilon",
                "modelspec.implementation": "sdrt", SCALING_FACTOR_KEY: repr(float(vae.config.scaling_factor))}
    directory = os.path.dirname(os.path.abspath(path))
    if not os.access(directory, os.W_OK):
        raise PermissionError(f"{path}: the folder {directory} is not writable")
    tmp = f"{path}.partial"
    save_file(state, tmp, metadata=metadata)
    os.replace(tmp, path)  # never a half-written checkpoint under the real name
