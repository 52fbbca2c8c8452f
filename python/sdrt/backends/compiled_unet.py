"""The torch backend's compiled UNet: torch.compile (TorchInductor) on static shapes, channels_last.

What it adds to a plain ``torch.compile(unet)``: the UNet's activations in channels_last (its
convolutions then run without layout conversions), static shapes (one graph per latent size and
batch; a new size recompiles instead of running a slower dynamic graph), and per mode the inductor
options of diffusers' SD speed-up recipe (1x1 convolutions as matmuls, coordinate-descent tuning,
no epilogue fusion; CUDA graphs where the mode has them). The options go to this one compile
call, not to the process-wide inductor config.

The compiled function calls the same module, so job-scoped weight patches (LoRA, written in place
with ``copy_``) reach it: inductor reads parameters as graph inputs unless ``freezing`` is on, and
it is off here. Warm-up: the first call at each shape compiles (seconds on the toy, minutes for a
full-size UNet with autotuning); inductor caches its kernels on disk across processes.
"""
from __future__ import annotations

from typing import Callable

import torch

# "off" and torch.compile's own mode names (torch._inductor.list_mode_options gives their options)
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
# diffusers' SD speed-up recipe, added to max-autotune
_RECIPE = {"conv_1x1_as_mm": True, "coordinate_descent_tuning": True, "epilogue_fusion": False}


def check_compile_mode(mode: str) -> str:
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile={mode!r}; valid: {', '.join(COMPILE_MODES)}")
    return mode


def inductor_options(mode: str, device: torch.device) -> dict:
    """The options passed to torch.compile for `mode` on `device`: torch's own for the mode, plus
    the recipe for max-autotune; CUDA graphs and Triton tuning only on CUDA."""
    from torch._inductor import list_mode_options

    options = dict(list_mode_options(check_compile_mode(mode)))
    if mode == "max-autotune":
        options.update(_RECIPE)
    if device.type != "cuda":
        options = {k: v for k, v in options.items() if not k.startswith("triton.") and k != "coordinate_descent_tuning"}
    return options


def compile_unet(unet: torch.nn.Module, mode: str, device: torch.device) -> Callable:
    """`unet` itself for mode "off"; otherwise the module in channels_last, compiled for static
    shapes. The returned callable takes the UNet's call arguments."""
    if check_compile_mode(mode) == "off":
        return unet
    unet.to(memory_format=torch.channels_last)
    return torch.compile(unet, dynamic=False, fullgraph=False, options=inductor_options(mode, device))
