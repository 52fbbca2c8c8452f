"""Loading ControlNets: the shipped toy ones, diffusers folders, and the original single files
(lllyasviel's cldm layout: ``control_model.``-prefixed or bare keys, .safetensors or .pth) as
diffusers ``ControlNetModel``s.

A single file carries no config, and diffusers' own single-file path either needs the network or
(0.42.1, with ``original_config``) fails, so the config is read off the file's key shapes (levels,
widths, transformer depths, hint encoder, SDXL's added embedding) and completed with the head
layout of the sdrt architecture whose cross-attention width matches; the keys are then mapped by
diffusers' ``convert_controlnet_checkpoint``. Files are read by sdrt's safe readers only.
"""
from __future__ import annotations

import os
import re
from typing import Mapping, Optional, Sequence

import torch

from ..loaders.model_folders import ModelFolders, without_hash_suffix
from ..loaders.state_dict import ModelFileError, read_state_dict
from ..loading import _quiet_hf_loading
from ..models import architectures

LDM_PREFIX = "control_model."
DIFFUSERS_KEY = "time_embedding.linear_1.weight"
# the shipped toy ControlNets, by name: folders under sdrt/toy (diffusers layout)
SHIPPED_CONTROLNETS = {"toy_canny": "controlnet_canny", "toy_seg": "controlnet_seg"}


def shipped_controlnet_path(name: str) -> str:
    from importlib.resources import files

    return str(files("sdrt.toy") / SHIPPED_CONTROLNETS[name])


def controlnet_path(name: str, folders: Optional[ModelFolders] = None) -> str:
    """The file or diffusers folder a ControlNet name means: a shipped toy name, an existing path,
    or a name in models/ControlNet (with or without extension and " [hash]")."""
    name = without_hash_suffix(str(name).strip())  # the extension's "name [hash8]" titles
    if name in SHIPPED_CONTROLNETS:
        return shipped_controlnet_path(name)
    expanded = os.path.expanduser(name)
    if os.path.isabs(expanded) and os.path.exists(expanded):
        return expanded
    folders = folders or configured_folders()
    if folders is None:
        raise ValueError(f"controlnet {name!r}: not a shipped name ({', '.join(SHIPPED_CONTROLNETS)}) or an "
                         f"existing absolute path, and no models folder is set (models_dir=, --models-dir or "
                         f"SDRT_MODELS_ROOT) to look it up in")
    folder = os.path.join(folders.folder("controlnet"), name)
    if os.path.isfile(os.path.join(folder, "config.json")) and ".." not in name.replace("\\", "/").split("/"):
        return folder
    return folders.resolve("controlnet", name)


def configured_folders() -> Optional[ModelFolders]:
    """$SDRT_MODELS_ROOT's folders, or None: never a models/ folder of the working directory."""
    from ..loading import model_folders

    return model_folders(None)


def load_controlnet(path_or_name: str, *, folders: Optional[ModelFolders] = None,
                    dtype: torch.dtype = torch.float32):
    """The diffusers ControlNetModel of a shipped name, path or models/ControlNet name, in `dtype`,
    in eval mode without gradients."""
    from diffusers import ControlNetModel

    path = controlnet_path(path_or_name, folders)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ValueError(f"controlnet {path_or_name!r}: {path} is not a diffusers ControlNet folder (no config.json)")
        with _quiet_hf_loading():
            # safetensors only: a .bin there would be unpickled by diffusers, not sdrt's safe reader
            model = ControlNetModel.from_pretrained(path, torch_dtype=dtype, local_files_only=True, use_safetensors=True)
    else:
        model = load_controlnet_file(path, dtype=dtype)
    if next(model.parameters()).dtype != dtype:
        model = model.to(dtype)
    return model.eval().requires_grad_(False)


def load_controlnet_file(path: str, *, dtype: torch.dtype = torch.float32):
    """An original single-file ControlNet as a diffusers ControlNetModel."""
    from diffusers import ControlNetModel
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    from ..loaders.single_file import _on_meta, _strict_load

    state = read_state_dict(path, dtype=dtype)
    if DIFFUSERS_KEY in state:  # a diffusers ControlNet saved as one file (most SDXL ones)
        config = config_from_diffusers_keys({k: tuple(v.shape) for k, v in state.items()}, path)
    else:
        state = bare_keys(state, path)
        config = config_from_keys({k: tuple(v.shape) for k, v in state.items()}, path)
    config["global_pool_conditions"] = _global_average_pooling(path, sdxl="addition_embed_type" in config)
    model = _on_meta(lambda: ControlNetModel(**config))
    converted = convert_controlnet_checkpoint(state, dict(model.config))
    _strict_load(model, converted, path, "ControlNet")
    return model


def bare_keys(state: Mapping[str, torch.Tensor], path: str) -> dict[str, torch.Tensor]:
    """The cldm keys without the ``control_model.`` prefix a full ControlNet checkpoint has."""
    if any("lora_controlnet" in k for k in state):
        raise ModelFileError(path, "a control-LoRA file (lora_controlnet): not supported, only full ControlNets")
    if any(k.startswith(LDM_PREFIX) for k in state):
        state = {k[len(LDM_PREFIX):]: v for k, v in state.items() if k.startswith(LDM_PREFIX)}
    if "input_hint_block.0.weight" not in state:
        raise ModelFileError(path, "not a ControlNet: no input_hint_block (the control image encoder)",
                             key="input_hint_block.0.weight")
    return dict(state)


def config_from_keys(shapes: Mapping[str, Sequence[int]], path: str = "") -> dict:
    """A ControlNetModel config from a cldm state dict's key shapes (bare keys)."""
    levels = _levels(shapes)
    context = next((s[1] for k, s in shapes.items() if k.endswith("attn2.to_k.weight")), None)
    if context is None:
        raise ModelFileError(path, "no cross-attention layer found: not an SD ControlNet")
    family = _family_for(int(context), path)  # the head layout is not in the weights
    hint = [shapes[f"input_hint_block.{i}.weight"][0] for i in range(0, 16, 2) if f"input_hint_block.{i}.weight" in shapes]
    config = {
        "in_channels": int(shapes["input_blocks.0.0.weight"][1]),
        "conditioning_channels": int(shapes["input_hint_block.0.weight"][1]),
        "block_out_channels": [lv["channels"] for lv in levels],
        "layers_per_block": levels[0]["layers"],
        "down_block_types": ["CrossAttnDownBlock2D" if lv["depth"] else "DownBlock2D" for lv in levels],
        "transformer_layers_per_block": [max(lv["depth"], 1) for lv in levels],
        "cross_attention_dim": int(context),
        "attention_head_dim": _heads(family, [lv["channels"] for lv in levels]),
        "use_linear_projection": any(len(s) == 2 for k, s in shapes.items() if k.endswith("proj_in.weight")),
        "conditioning_embedding_out_channels": [int(hint[0])] + [int(c) for c in hint[2:-1:2]],
        "mid_block_type": "UNetMidBlock2DCrossAttn" if any(k.startswith("middle_block.1.") for k in shapes)
        else "UNetMidBlock2D",
    }
    if "label_emb.0.0.weight" in shapes:  # SDXL: pooled text and size ids
        config.update(addition_embed_type="text_time", addition_time_embed_dim=256,
                      projection_class_embeddings_input_dim=int(shapes["label_emb.0.0.weight"][1]))
    return config


def config_from_diffusers_keys(shapes: Mapping[str, Sequence[int]], path: str = "") -> dict:
    """A ControlNetModel config from a diffusers-keyed state dict's shapes."""
    def count(prefix: str) -> int:
        return len({k[len(prefix):].split(".")[0] for k in shapes if k.startswith(prefix)})
    n_levels = count("down_blocks.")
    if not n_levels or "controlnet_cond_embedding.conv_in.weight" not in shapes:
        raise ModelFileError(path, "not a ControlNet in diffusers' layout (no down_blocks / controlnet_cond_embedding)")
    channels = [int(shapes[f"down_blocks.{i}.resnets.0.conv2.weight"][0]) for i in range(n_levels)]
    depths = [count(f"down_blocks.{i}.attentions.0.transformer_blocks.") for i in range(n_levels)]
    context = next((s[1] for k, s in shapes.items() if k.endswith("attn2.to_k.weight")), None)
    if context is None:
        raise ModelFileError(path, "no cross-attention layer found: not an SD ControlNet")
    hint = [shapes["controlnet_cond_embedding.conv_in.weight"]] + \
        [shapes[f"controlnet_cond_embedding.blocks.{i}.weight"] for i in range(count("controlnet_cond_embedding.blocks."))]
    config = {
        "in_channels": int(shapes["conv_in.weight"][1]),
        "conditioning_channels": int(hint[0][1]),
        "block_out_channels": channels, "layers_per_block": count("down_blocks.0.resnets."),
        "down_block_types": ["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in depths],
        "transformer_layers_per_block": [max(d, 1) for d in depths],
        "cross_attention_dim": int(context),
        "attention_head_dim": _heads(_family_for(int(context), path), channels),
        "use_linear_projection": any(len(s) == 2 for k, s in shapes.items() if k.endswith("proj_in.weight")),
        "conditioning_embedding_out_channels": [int(h[0]) for h in hint[0::2]],
        "mid_block_type": "UNetMidBlock2DCrossAttn" if any(k.startswith("mid_block.attentions.") for k in shapes)
        else "UNetMidBlock2D",
    }
    if "add_embedding.linear_1.weight" in shapes:  # SDXL: pooled text and size ids
        config.update(addition_embed_type="text_time", addition_time_embed_dim=256,
                      projection_class_embeddings_input_dim=int(shapes["add_embedding.linear_1.weight"][1]))
    return config


def _levels(shapes: Mapping[str, Sequence[int]]) -> list[dict]:
    """The encoder's levels from input_blocks 1..N: resnets (with or without a transformer) until a
    downsampler (``.0.op``) ends the level."""
    levels, current, i = [], {"layers": 0, "depth": 0, "channels": 0}, 1
    while any(k.startswith(f"input_blocks.{i}.") for k in shapes):
        if f"input_blocks.{i}.0.op.weight" in shapes:
            levels.append(current)
            current = {"layers": 0, "depth": 0, "channels": 0}
        else:
            current["layers"] += 1
            current["channels"] = int(shapes[f"input_blocks.{i}.0.out_layers.3.weight"][0])
            blocks = {k.split(".")[4] for k in shapes if k.startswith(f"input_blocks.{i}.1.transformer_blocks.")}
            current["depth"] = max(current["depth"], len(blocks))
        i += 1
    levels.append(current)
    return levels


def _family_for(context: int, path: str) -> architectures.Architecture:
    """The architecture whose text conditioning has this width; SD1's (8 heads per level, the
    original cldm configs' layout) for widths no sdrt model has."""
    for arch in architectures.ARCHITECTURES.values():
        if int(arch.unet.get("cross_attention_dim", 1280)) == context and arch.family != "sdxl-refiner":
            return arch
    return architectures.SD1


def _heads(arch: architectures.Architecture, channels: list[int]):
    """diffusers' attention_head_dim (heads per level for SD1-shaped models, as their configs say)."""
    heads = arch.unet.get("attention_head_dim", 8)
    if isinstance(heads, (list, tuple)):
        return [heads[i] if i < len(heads) else heads[-1] for i in range(len(channels))]
    return heads


def _global_average_pooling(path: str, sdxl: bool) -> bool:
    """Global pooling of the residuals (the shuffle model): as the extension decides it, an SD1 / SD2
    ControlNet whose file name contains "shuffle", or whose .yaml beside it says so."""
    if sdxl:
        return False
    if "shuffle" in os.path.basename(path).lower():
        return True
    yaml = os.path.splitext(path)[0] + ".yaml"
    if not os.path.isfile(yaml):
        return False
    with open(yaml, encoding="utf-8", errors="replace") as f:
        return re.search(r"global_average_pooling\s*:\s*true", f.read(), re.IGNORECASE) is not None



def list_controlnets(folders: Optional[ModelFolders] = None) -> list[str]:
    """The extension's model_list: the shipped toy names, then models/ControlNet's single files as
    "stem [hash8]" and its diffusers folders by name (files inside such folders are weights, not models)."""
    from .job import model_title

    names = list(SHIPPED_CONTROLNETS)
    folders = folders or configured_folders()
    if folders is None:
        return names
    root = folders.folder("controlnet")
    if not os.path.isdir(root):
        return names
    diffusers_dirs = sorted(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, "config.json")))
    inside = tuple(os.path.join(root, d) + os.sep for d in diffusers_dirs)
    files = [e.path for e in folders.list("controlnet") if not e.path.startswith(inside)]
    return names + [model_title(p) for p in files] + diffusers_dirs
