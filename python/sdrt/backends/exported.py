"""What the backends that run exported graphs (ONNX Runtime, TensorRT) share: the calling
convention of the export specs (sdrt.export.specs), the token lookup outside the text encoder
graphs, clip skip, SDXL's text features and added UNet inputs, exported ControlNets and the UNet
taking their residuals, and the shape-range check of engines.

The text encoder graphs take token embeddings, not ids, so textual-inversion vectors can replace
their slots before they run. SD's returns the final-layer-normed hidden state of every layer, so
clip skip is a row index rather than a second graph; SDXL's return the penultimate layer's states
(and text_encoder_2 its pooled projection, at the position this side computes from the ids). A
subclass only says how one component runs (`_run_outputs`); everything here is the same for every
exported runtime.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np
import torch

from ..loaders.model_folders import hash_suffix, without_hash_suffix
from .base import BackendCapabilities, refuse_extras

RESIDUAL_KEYS = ("down_block_additional_residuals", "mid_block_additional_residual")  # diffusers' UNet kwargs
Shape = tuple[int, ...]
Profile = dict[str, tuple[Shape, Shape, Shape]]  # input -> (min, opt, max)


def load_token_embeddings(folder: str, components, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Each exported text encoder's token-embedding table, saved by the exporter beside its graph
    (<component>/token_embedding.npy), for those of `components` that have one."""
    tables = {}
    for name in components:
        path = os.path.join(folder, name, "token_embedding.npy")
        if os.path.isfile(path):
            tables[name] = torch.from_numpy(np.load(path)).to(device)
    return tables


def graph_paths(folder: str, manifest: dict, prefer: tuple[str, ...] = ("file",)) -> dict[str, str]:
    """Each graph file of an ONNX export folder (exported_graphs' names), checked to exist: per
    component the first of the entry's keys in `prefer` it has (the openvino backend prefers the
    OpenVINO IR, "openvino_file", where the export wrote one)."""
    paths = {}
    for name, component in exported_graphs(manifest).items():
        file = component[next((key for key in prefer if key in component), "file")]
        paths[name] = os.path.join(folder, file)
        if not os.path.isfile(paths[name]):
            raise FileNotFoundError(f"{folder}: component {name} is missing ({file})")
    return paths


def numpy_inputs(inputs: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """A graph's feed: float32 (fp16 exports keep fp32 I/O) but for int64 positions, on the CPU,
    contiguous (inputs may be expanded stride-0 tensors, e.g. one control image per row)."""
    return {name: np.ascontiguousarray(
                value.detach().to("cpu", torch.float32 if value.is_floating_point() else torch.int64).numpy())
            for name, value in inputs.items()}


def timestep_per_row(timestep: torch.Tensor, batch: int) -> torch.Tensor:
    """The graphs take one timestep per batch row; samplers may pass a single one."""
    if timestep.numel() == 1:
        return timestep.reshape(-1).float().expand(batch)
    return timestep.float()


def check_in_profile(profile: Profile, shapes: Mapping[str, Shape], *, engine: str = "engine") -> None:
    """Refuse inputs outside the engine's range, naming the input, the axis and what to rebuild."""
    for name, shape in shapes.items():
        lo, _, hi = profile[name]
        for axis, (value, a, b) in enumerate(zip(shape, lo, hi)):
            if not a <= value <= b:
                raise ValueError(f"{engine}: input {name!r} axis {axis} is {value}, outside the engine's "
                                 f"range {a}-{b}; rebuild the engine with a wider profile "
                                 "(sdrt export --to tensorrt --size/--batch)")


@dataclass(frozen=True)
class ExportedControlNet:
    """A ControlNet exported beside the model (``sdrt export --controlnet``): what a unit needs of
    it besides the graph (sdrt.control.job)."""
    key: str                      # its folder under controlnets/ and its manifest entry
    title: str                    # the name the infotext gives it
    residual_count: int           # down-block residuals + the mid block's
    global_pool_conditions: bool  # a shuffle model: the extension runs it on the conditional rows only


def exported_graphs(manifest: dict) -> dict[str, dict]:
    """Every graph of an export folder by the name a backend runs it under: the model's components,
    then the ControlNets exported with it as "controlnet/<key>"."""
    return {**manifest.get("components", {}),
            **{f"controlnet/{key}": entry for key, entry in manifest.get("controlnets", {}).items()}}


def _name_stem(name: str) -> str:
    """A ControlNet name as the export matches it: no " [hash]", no folder, no file extension."""
    stem = without_hash_suffix(str(name).strip())
    stem = os.path.basename(stem.rstrip("/\\"))
    return re.sub(r"\.(safetensors|pth|ckpt|pt|bin)$", "", stem, flags=re.IGNORECASE).lower()


class ExportedBackend:
    """The Backend contract over exported component graphs. Subclasses set `name`, `manifest`
    (with "text_layers" when SD's text encoder was exported) and `token_embeddings` (component ->
    torch table), and implement `_run_outputs`."""

    name = "exported"
    # fixed graphs: no torch modules to patch, no inputs beyond the export specs' (an SDXL export's
    # UNet takes its added conditions, the only extras accepted: see unet_forward)
    capabilities = BackendCapabilities(patchable_weights=False, extra_unet_inputs=False, devices=("cpu", "cuda"))
    manifest: dict
    token_embeddings: dict[str, torch.Tensor] = {}

    def _run_outputs(self, component: str, like: torch.Tensor, **inputs: torch.Tensor) -> list[torch.Tensor]:
        """Run `component` on `inputs` (named as in the export specs); every output as float32 on
        `like`'s device."""
        raise NotImplementedError

    def _run(self, component: str, like: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        return self._run_outputs(component, like, **inputs)[0]

    @property
    def token_embedding(self) -> Optional[torch.Tensor]:
        """text_encoder's table (SD's only text encoder), or None."""
        return self.token_embeddings.get("text_encoder")

    @property
    def text_widths(self) -> dict[str, int]:
        """Each exported text encoder's embedding width: what its textual-inversion vectors must have."""
        return {name: int(table.shape[1]) for name, table in self.token_embeddings.items()}

    def _missing(self, component: str, present) -> ValueError:
        return ValueError(f"{getattr(self, 'folder', 'this export')}: this export has no {component} "
                          f"(exported: {', '.join(present)})")

    def _entry(self, component: str) -> dict:
        """The manifest entry of a component, or of an exported ControlNet ("controlnet/<key>")."""
        return exported_graphs(self.manifest).get(component, {})

    def _inputs_of(self, component: str) -> set[str]:
        """The input names of an exported component (ONNX manifests list them; engine folders of
        older exports only have them as their profile's keys)."""
        entry = self._entry(component)
        return set(entry.get("inputs") or entry.get("profile") or ())

    def _unet_component(self) -> str:
        """"unet", or "unet_controlled" in an export made with ControlNets (its UNet takes their
        residuals; runs without control add zeros, x + 0 == x)."""
        components = self.manifest.get("components", {})
        return "unet_controlled" if "unet_controlled" in components and "unet" not in components else "unet"

    def unet_forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                     extras: Optional[dict] = None) -> torch.Tensor:
        """`extras` may hold SDXL's ``added_cond_kwargs`` (text_embeds, time_ids), for an export
        whose UNet takes them, and ControlNet residuals (down_block_additional_residuals,
        mid_block_additional_residual), for an export made with ControlNets; anything else is
        refused (a fixed graph)."""
        extras = dict(extras or {})
        added = extras.pop("added_cond_kwargs", None)
        residuals = {k: extras.pop(k) for k in RESIDUAL_KEYS if k in extras}
        refuse_extras(self.name, extras)
        component = self._unet_component()
        inputs = dict(sample=x, timestep=timestep_per_row(timestep, x.shape[0]), encoder_hidden_states=context,
                      **self._added_inputs(added, component))
        if component == "unet_controlled":
            inputs.update(self._residual_inputs(x, residuals))
        elif residuals:
            raise ValueError(f"extras: {getattr(self, 'folder', 'this export')} has no UNet taking ControlNet "
                             "residuals; export the model with --controlnet NAME")
        return self._run(component, x, **inputs)

    def _residual_inputs(self, x: torch.Tensor, residuals: dict) -> dict:
        """The controlled UNet's residual inputs: the given ones by name, or zeros of the shapes
        the manifest records (a step without control)."""
        layout = self.manifest["controlnet_residuals"]
        if not residuals:
            h, w = x.shape[-2:]
            return {r["name"]: x.new_zeros(x.shape[0], r["channels"], -(-h // r["factor"]), -(-w // r["factor"]))
                    for r in layout}
        given = [*residuals.get(RESIDUAL_KEYS[0], ()), residuals.get(RESIDUAL_KEYS[1])]
        if len(given) != len(layout) or given[-1] is None:
            raise ValueError(f"extras: {len(given)} ControlNet residuals (down blocks and mid); this export's "
                             f"UNet takes {len(layout)}")
        return {r["name"]: value for r, value in zip(layout, given)}

    def find_controlnet(self, name: str) -> tuple[ExportedControlNet, str]:
        """(the exported ControlNet a unit's model name means, its infotext title); the name may
        carry the " [hash]" of its file, as A1111's model lists give it."""
        exported = self.manifest.get("controlnets", {})
        for key, entry in exported.items():
            if _name_stem(name) in (key.lower(), _name_stem(entry["title"])):
                asked, have = hash_suffix(str(name).strip()), hash_suffix(entry["title"])
                if asked and have and asked != have:
                    raise ValueError(f"{getattr(self, 'folder', 'this export')} holds {entry['title']}, another "
                                     f"version of this file; export the model again with this ControlNet")
                handle = ExportedControlNet(key, entry["title"], len(entry["outputs"]),
                                            bool(entry.get("global_pool_conditions", False)))
                return handle, entry["title"]
        where = getattr(self, "folder", "this export")
        if not exported:
            raise ValueError(f"{where} was exported without ControlNets; export the model with --controlnet NAME "
                             "(repeatable) to run them on this backend")
        raise ValueError(f"not among the ControlNets exported with {where}; valid: "
                         f"{', '.join(e['title'] for e in exported.values())}")

    def controlnet_forward(self, controlnet: ExportedControlNet, x: torch.Tensor, timestep: torch.Tensor,
                           context: torch.Tensor, hint: torch.Tensor, extras: Optional[dict] = None
                           ) -> tuple[list, torch.Tensor]:
        """TorchBackend.controlnet_forward on an exported ControlNet graph (scale 1 per row: the
        units' scales are applied outside, sdrt.control.residuals)."""
        component = f"controlnet/{controlnet.key}"
        added = (extras or {}).get("added_cond_kwargs")
        outputs = self._run_outputs(component, x, sample=x, timestep=timestep_per_row(timestep, x.shape[0]),
                                    encoder_hidden_states=context, controlnet_cond=hint,
                                    conditioning_scale=x.new_ones(x.shape[0]),
                                    **self._added_inputs(added, component))
        return outputs[:-1], outputs[-1]

    def _added_inputs(self, added: Optional[dict], component: str) -> dict:
        """SDXL's added conditions as `component`'s text_embeds / time_ids inputs (none when the
        export lacks the component: running it says so)."""
        if not self._entry(component):
            return {}
        if "text_embeds" not in self._inputs_of(component):
            refuse_extras(self.name, None if added is None else {"added_cond_kwargs": added})
            return {}
        if not isinstance(added, dict) or set(added) != {"text_embeds", "time_ids"}:
            got = ", ".join(sorted(added)) if isinstance(added, dict) else repr(added)
            raise ValueError(f"extras: this SDXL export's {component} needs added_cond_kwargs with exactly "
                             f"text_embeds and time_ids (got {got})")
        return {"text_embeds": added["text_embeds"], "time_ids": added["time_ids"]}

    def _embed(self, component: str, ids: torch.Tensor, embeddings) -> torch.Tensor:
        """The token lookup the graph leaves out; textual-inversion vectors replace their slots."""
        table = self.token_embeddings.get(component)
        if table is None:
            raise self._missing(component, self.manifest.get("components", {}))
        embeds = table[ids.to(table.device)].float()
        for row, slots in enumerate(embeddings or []):
            for slot in slots:
                embeds[row, slot.offset:slot.offset + slot.vectors.shape[0]] = slot.vectors.to(embeds)
        return embeds

    def encode_text(self, ids: torch.Tensor, clip_skip: int = 1, embeddings=None) -> torch.Tensor:
        """Token ids -> hidden states: the token lookup here (textual-inversion vectors replace their
        slots), the transformer in the graph, clip skip N = layer L - N of its per-layer output."""
        embeds = self._embed("text_encoder", ids, embeddings)
        if self.manifest.get("text_layers") is None:
            raise ValueError(f"{getattr(self, 'folder', 'this export')}: an SDXL export; its text encoders give "
                             "SDXL's features (encode_text_sdxl), not every layer for clip skip")
        layers = int(self.manifest["text_layers"])
        if not 1 <= clip_skip <= layers:
            raise ValueError(f"clip_skip={clip_skip}; this text encoder has {layers} layers")
        return self._run("text_encoder", ids, inputs_embeds=embeds)[layers - clip_skip]

    def encode_text_sdxl(self, ids: torch.Tensor, component: str = "text_encoder",
                         embeddings=None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """SDXL's features of one exported text encoder, as TorchBackend.encode_text_sdxl gives them:
        the penultimate hidden states (no final layer norm) and, for "text_encoder_2", the projected
        pooled output. It pools at OpenCLIP's position, the argmax of the ids (the first end-of-text
        token, the highest id: transformers' pooling for SDXL's configs too)."""
        if component not in ("text_encoder", "text_encoder_2"):
            raise ValueError(f"component={component!r}; valid: text_encoder, text_encoder_2")
        embeds = self._embed(component, ids, embeddings)
        if self.manifest.get("text_layers") is not None:
            raise ValueError(f"{getattr(self, 'folder', 'this export')}: an SD export; its text encoder gives "
                             "every layer for clip skip (encode_text), not SDXL's features")
        if "eos_index" not in self._inputs_of(component):
            return self._run(component, ids, inputs_embeds=embeds), None
        hidden, pooled = self._run_outputs(component, ids, inputs_embeds=embeds, eos_index=ids.argmax(dim=-1))
        return hidden, pooled

    def vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Unscaled latents -> images. A fixed graph cannot fall back to fp32 as the torch backend
        does, so a decode that is not finite (SDXL's VAE in fp16) is an error saying what to do."""
        images = self._run("vae_decoder", latents, latent=latents)
        if not torch.isfinite(images).all():
            raise FloatingPointError(f"{getattr(self, 'folder', 'this export')}: the VAE decoder gave non-finite values "
                                     "(SDXL's VAE overflows in fp16); export with the fp16-fix VAE (--vae) or in fp32")
        return images

    def vae_encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._run("vae_encoder", pixels, image=pixels)
