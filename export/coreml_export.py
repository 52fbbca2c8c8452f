"""Core ML export: each component as an ``.mlpackage`` (ML Program, fp16) through torch.export +
coremltools, for the Swift / Python Core ML runtime on Apple Silicon.

Conversion runs on Linux; running a package needs macOS, so prediction is tested only there. The
I/O names are the export specs' (sdrt.export.specs); Core ML packages get fixed shapes (batch 2
for the UNet, i.e. one image with CFG, batch 1 elsewhere, the model's native size unless told
otherwise, one 77-token chunk), as Apple's ml-stable-diffusion builds them.

Attention: "original" keeps diffusers' batched attention (best on the GPU); "split_einsum"
computes each head on its own with einsum (Apple's layout for the Neural Engine, which handles
many small matmuls better than one large one): same numbers, different graph. Optional
palettization (``palettize_bits``) clusters weights into 2^n values with coremltools.optimize.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import time
import warnings
from functools import partial
from typing import Callable, Optional, Sequence

import torch

from sdrt.backends import manifests
from sdrt.backends.attention import SplitEinsumAttnProcessor, attention_processors

from .common import (check_components, check_writable, controlnet_facts, controlnets_for_export, model_facts,
                     require_torch_pipeline, with_loras)
from .specs import TOKENS, added_unet_sample, components_for

MANIFEST = manifests.COREML
ATTENTION = ("original", "split_einsum")
PALETTIZE_BITS = (1, 2, 3, 4, 6, 8)  # what Core ML's lookup tables take


@contextlib.contextmanager
def _quiet():
    """coremltools' chatter held back: off macOS its import logs a "Failed to load _ML...Proxy" line
    per prediction binding (prediction is macOS-only; conversion, all sdrt uses it for, works
    without them), and conversion draws progress bars and logs int64 -> int32 casts of constants.
    Replayed on stderr when the conversion fails, where it may explain why."""
    logger = logging.getLogger("coremltools")
    level, held = logger.level, io.StringIO()
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(held):
            yield
    except BaseException:
        sys.stderr.write(held.getvalue())
        raise
    finally:
        logger.setLevel(level)


def _coremltools():
    with _quiet():
        import coremltools
    return coremltools


def sample_inputs(pipe, component: str, *, size: Optional[int] = None) -> tuple[torch.Tensor, ...]:
    """Fixed-shape inputs for a package: UNet batch 2 (CFG), others batch 1, one text chunk; the
    inputs the model's specs add for SDXL (pooled position, pooled text and time ids) included."""
    size = size or pipe.info.default_size
    if size % 64:
        raise ValueError(f"size={size}: Core ML packages take pixel sizes in multiples of 64")
    latent = size // 8
    spec = components_for(pipe)[component]
    if component.startswith("text_encoder"):
        embeds = torch.randn(1, TOKENS, getattr(pipe, component).config.hidden_size)
        return (embeds, torch.tensor([TOKENS - 1]))[:len(spec.inputs)]  # eos_index: text_encoder_2 of SDXL
    if component == "unet":
        unet = pipe.unet
        sample = (torch.randn(2, unet.config.in_channels, latent, latent), torch.full((2,), 500.0),
                  torch.randn(2, TOKENS, unet.config.cross_attention_dim))
        return sample + (added_unet_sample(pipe, 2, torch.float32) if len(spec.inputs) > len(sample) else ())
    if component == "vae_decoder":
        return (torch.randn(1, pipe.vae.config.latent_channels, latent, latent),)
    return (torch.rand(1, 3, size, size) * 2 - 1,)


def convert_component(pipe, component: str, path: str, *, size: Optional[int] = None, attention: str = "original",
                      palettize_bits: Optional[int] = None):
    """One component -> an .mlpackage at `path`; returns the coremltools model."""
    specs = components_for(pipe)
    if component not in specs:
        raise ValueError(f"component {component!r} unknown; valid: {', '.join(specs)}")
    return _convert(specs[component], pipe, sample_inputs(pipe, component, size=size), path,
                    unet=pipe.unet if component == "unet" else None, attention=attention,
                    palettize_bits=palettize_bits)


def convert_controlnet_part(pipe, controlnet, part: str, path: str, *, size: Optional[int] = None,
                            attention: str = "original", palettize_bits: Optional[int] = None):
    """`part` "controlnet" (the ControlNet) or "unet_controlled" (the UNet taking its residuals) ->
    an .mlpackage at `path`, at the UNet package's fixed shapes (batch 2, the model's size unless
    told); returns the coremltools model."""
    from .controlnet_specs import controlnet_components, pair, sample_inputs as controlnet_sample

    size = size or pipe.info.default_size
    if size % 64:
        raise ValueError(f"size={size}: Core ML packages take pixel sizes in multiples of 64")
    residuals = part == "unet_controlled"
    sample = controlnet_sample(pipe.unet, controlnet, residuals=residuals, size=size // 8)
    return _convert(controlnet_components(pipe.unet, controlnet)[part], pair(pipe.unet, controlnet), sample, path,
                    unet=pipe.unet if residuals else controlnet, attention=attention, palettize_bits=palettize_bits)


def _convert(spec, modules, sample: tuple, path: str, *, unet, attention: str, palettize_bits: Optional[int]):
    """`spec`'s module of `modules`, exported at `sample`'s fixed shapes, to an .mlpackage at `path`
    (`unet`: the UNet or ControlNet whose attention processors `attention` sets)."""
    ct = _coremltools()
    if attention not in ATTENTION:
        raise ValueError(f"attention={attention!r}; valid: {', '.join(ATTENTION)}")
    if palettize_bits is not None and palettize_bits not in PALETTIZE_BITS:  # before minutes of conversion
        raise ValueError(f"palettize_bits={palettize_bits}; Core ML palettizes to 1, 2, 3, 4, 6 or 8 bits")
    module = spec.wrap(modules).eval().float()
    processor = SplitEinsumAttnProcessor() if attention == "split_einsum" else None
    with attention_processors(unet, processor), warnings.catch_warnings(), torch.no_grad(), _quiet():
        warnings.simplefilter("ignore")
        program = torch.export.export(module, sample).run_decompositions({})
        model = ct.convert(program, minimum_deployment_target=ct.target.macOS14,
                           compute_precision=ct.precision.FLOAT16, convert_to="mlprogram",
                           inputs=[ct.TensorType(name=t.name, shape=v.shape) for t, v in zip(spec.inputs, sample)],
                           outputs=[ct.TensorType(name=t.name) for t in spec.outputs])
        if palettize_bits is not None:
            model = _palettize(model, palettize_bits)
        model.short_description = f"sdrt {spec.name} ({attention} attention)"
        model.save(path)
    return model


def _palettize(model, bits: int):
    from coremltools.optimize.coreml import OpPalettizerConfig, OptimizationConfig, palettize_weights

    # uniform clusters: k-means would need scikit-learn and minutes per UNet
    config = OptimizationConfig(global_config=OpPalettizerConfig(mode="uniform", nbits=bits))
    return palettize_weights(model, config)


def to_coreml(pipe, out_dir: str, *, components: Sequence[str] | None = None, size: Optional[int] = None,
              attention: str = "original", palettize_bits: Optional[int] = None, loras: Sequence | None = None,
              progress: Optional[Callable[[str], None]] = None, in_place: bool = False,
              controlnets: Sequence[str] = ()) -> dict:
    """Export a loaded torch-backend Pipeline (``sdrt.load(model)``) to `out_dir` as .mlpackage
    files plus sdrt_coreml.json (names, shapes, model facts). `loras` are merged first, into a copy
    of `pipe` unless `in_place`. `controlnets` (names or paths, as a unit's model): each to
    controlnets/<name>.mlpackage, and the UNet as unet_controlled.mlpackage taking their residuals."""
    from sdrt import __version__

    require_torch_pipeline(pipe, exporter="to_coreml")
    specs = components_for(pipe)
    names = check_components(components or [n for n in specs if n != "vae_encoder"], specs)
    check_writable(out_dir)
    say = progress or (lambda message: None)
    pipe = with_loras(pipe, loras, say, in_place=in_place)
    controls = controlnets_for_export(pipe, controlnets, names)
    manifest = {"format": manifests.FORMAT, "sdrt_version": __version__, "attention": attention,
                "palettize_bits": palettize_bits, "model": model_facts(pipe), "components": {}}
    options = dict(size=size, attention=attention, palettize_bits=palettize_bits)
    for name in names:
        if name == "unet" and controls:
            manifest["components"]["unet_controlled"], manifest["controlnets"] = _convert_controlled(
                pipe, controls, out_dir, options, say)
            continue
        file = f"{name}.mlpackage"
        manifest["components"][name] = _timed(
            file, partial(convert_component, pipe, name, os.path.join(out_dir, file), **options), say)
    manifests.write_manifest(out_dir, MANIFEST, manifest)
    return manifest


def _convert_controlled(pipe, controls, out_dir: str, options: dict,
                        say: Callable[[str], None]) -> tuple[dict, dict]:
    """The manifest entries of the UNet taking ControlNet residuals and of each ControlNet."""
    os.makedirs(os.path.join(out_dir, "controlnets"), exist_ok=True)
    entries = {}
    for key, model, title in controls:
        file = f"controlnets/{key}.mlpackage"
        entries[key] = {**_timed(file, partial(convert_controlnet_part, pipe, model, "controlnet",
                                               os.path.join(out_dir, file), **options), say),
                        **controlnet_facts(model, title)}
    file = "unet_controlled.mlpackage"
    unet = _timed(file, partial(convert_controlnet_part, pipe, controls[0][1], "unet_controlled",
                                os.path.join(out_dir, file), **options), say)
    return unet, entries


def _timed(file: str, convert: Callable, say: Callable[[str], None]) -> dict:
    """Run a conversion; its package's manifest entry: file, fixed input and output shapes, time."""
    started = time.perf_counter()
    description = convert().get_spec().description
    entry = {"file": file, "inputs": {i.name: list(i.type.multiArrayType.shape) for i in description.input},
             "outputs": {o.name: list(o.type.multiArrayType.shape) for o in description.output},
             "seconds": round(time.perf_counter() - started, 2)}
    say(f"{file}: {entry['inputs']} -> {entry['outputs']} in {entry['seconds']} s")
    return entry
