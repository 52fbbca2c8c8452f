"""Shared plumbing of the model-based preprocessors: find the user's weight file, read it through
sdrt's safe reader (never torch.load), build the network once per file and run it without grads."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ...loaders.state_dict import read_state_dict
from ..annotators import annotator_file, cached


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_net(folders, subfolder: str, filename: str, build: Callable[[], torch.nn.Module],
             strip_module: bool = False) -> torch.nn.Module:
    """The network `build()` with the weights of <annotators>/<subfolder>/<filename> (strict key
    match); `strip_module` drops the "module." of nn.DataParallel checkpoints. Kept between calls."""
    path = annotator_file(folders, subfolder, filename)

    def make(p: str) -> torch.nn.Module:
        state = read_state_dict(p)
        if strip_module:
            state = {k.replace("module.", ""): v for k, v in state.items()}
        net = build()
        net.load_state_dict(state, strict=True)
        return net.float().eval().to(device())

    return cached(path, make)


def to_tensor(image: np.ndarray, net: torch.nn.Module) -> torch.Tensor:
    """(H, W, 3) array -> (1, 3, H, W) float32 on the network's device."""
    x = torch.from_numpy(np.ascontiguousarray(image)).float().permute(2, 0, 1)[None]
    return x.to(next(net.parameters()).device)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """[0, 1] map -> uint8 the way the annotators round: x * 255, clipped, truncated."""
    return (x * 255.0).clip(0, 255).astype(np.uint8)


