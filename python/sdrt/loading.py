"""sdrt.load: a model name or folder -> a Pipeline on a backend."""
from __future__ import annotations

import contextlib
import json
import os
from importlib.resources import files
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

BACKENDS = ("torch", "onnxruntime", "tensorrt")


def toy_model_path() -> str:
    """The folder of the shipped toy model (diffusers layout)."""
    return str(files("sdrt.toy") / "weights")


CHECKPOINT_EXTENSIONS = (".safetensors", ".ckpt")


def _resolve(model: str) -> str:
    path = toy_model_path() if model == "toy" else os.path.expanduser(str(model))
    if not os.path.exists(path):
        raise FileNotFoundError(f"model {model!r}: no such file or folder ({path})")
    if os.path.isfile(path):
        if not path.lower().endswith(CHECKPOINT_EXTENSIONS):
            raise ValueError(f"model {model!r}: a single-file checkpoint must be one of "
                             f"{', '.join(CHECKPOINT_EXTENSIONS)}; or pass a diffusers folder or 'toy'")
        return path
    if not os.path.isfile(os.path.join(path, "model_index.json")):
        raise ValueError(f"model {model!r}: {path} is not a diffusers folder (no model_index.json)")
    return path


@contextlib.contextmanager
def _quiet_hf_loading():
    """diffusers/transformers log advice (install accelerate, progress bars) on every load; sdrt
    loads small local files where that advice does not apply."""
    import diffusers
    import transformers

    d_level, t_level = diffusers.utils.logging.get_verbosity(), transformers.utils.logging.get_verbosity()
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        diffusers.utils.logging.set_verbosity(d_level)
        transformers.utils.logging.set_verbosity(t_level)
        transformers.utils.logging.enable_progress_bar()


def load_components(folder: str, dtype: "torch.dtype", vae: str | None = None):
    """(unet, text_encoder, vae) of a diffusers folder, read from local files only; `vae` overrides
    the folder's VAE."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    common = dict(torch_dtype=dtype, local_files_only=True)
    with _quiet_hf_loading():
        unet = UNet2DConditionModel.from_pretrained(os.path.join(folder, "unet"), **common)
        text_encoder = CLIPTextModel.from_pretrained(os.path.join(folder, "text_encoder"), **common)
        own_vae = os.path.join(folder, "vae")
        like = _read_json(os.path.join(own_vae, "config.json")) if vae is not None and os.path.isfile(vae) else None
        vae_model = load_vae(vae if vae is not None else own_vae, dtype, config=like)
    return unet, text_encoder, vae_model


def _read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_vae(path: str, dtype: "torch.dtype", config: dict | None = None):
    """An AutoencoderKL from a diffusers folder, or from a single VAE file (A1111's models/VAE
    *.safetensors / *.pt / *.ckpt, original layout with or without the first_stage_model. prefix)
    with `config` (the model's own VAE config) or SD's."""
    from diffusers import AutoencoderKL

    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ValueError(f"vae={path!r}: expected a diffusers AutoencoderKL folder with config.json, or a VAE file")
        with _quiet_hf_loading():
            return AutoencoderKL.from_pretrained(path, torch_dtype=dtype, local_files_only=True)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"vae={path!r}: no such file or folder")
    from .loaders.single_file import load_vae_file

    return load_vae_file(path, dtype=dtype, config=config)


def model_folders(models_dir: str | None = None):
    """A1111's model folders under `models_dir` (else $SDRT_MODELS_ROOT); None when neither is set:
    sdrt never picks up a models/ folder from wherever it happens to run."""
    from .loaders.model_folders import ModelFolders

    root = models_dir or os.environ.get("SDRT_MODELS_ROOT")
    return ModelFolders(root) if root else None


def load(model: str = "toy", *, backend: str = "torch", device: str = "cpu", dtype: torch.dtype | None = None,
         vae: str | None = None, batch_invariant: bool = True, models_dir: str | None = None,
         embeddings_dir: str | None = None, attention: str = "sdpa", sampler_loop: str = "python"):
    """Load a model (``"toy"``, a diffusers folder, or a single-file .safetensors / .ckpt checkpoint
    of SD1.x / SD2.x incl. inpainting) and return a :class:`sdrt.pipelines.Pipeline`.

    models_dir (or $SDRT_MODELS_ROOT): A1111's layout (models/Stable-diffusion, Lora, VAE,
    embeddings); `model`, `vae` and LoRA names are then looked up there (only there: no path
    traversal), and the embeddings folder's textual inversions are usable in prompts by file name.
    embeddings_dir: another folder of embeddings.
    attention (torch backend): "sdpa" (torch's scaled_dot_product_attention, the default) or "sdrt"
    (sdrt's fused CPU kernel as the custom op sdrt::attention; on CUDA it falls back to SDPA).

    batch_invariant (default True): each image of a batch runs through the UNet and VAE on its own,
    so a batch with seeds s..s+3 is bit-identical to four single runs; False batches them into one
    call for throughput (results then differ from single runs by float rounding).
    sampler_loop: "python" (the reference samplers, the default) or "cpp" (the C++ loop,
    sdrt._C.sample_loop, for the samplers it covers; the same results)."""
    from .sampling import SAMPLER_LOOPS

    if sampler_loop not in SAMPLER_LOOPS:  # before any loading
        raise ValueError(f"sampler_loop={sampler_loop!r}; valid: {', '.join(SAMPLER_LOOPS)}")
    pipeline_options = {"batch_invariant": batch_invariant, "sampler_loop": sampler_loop}
    return _load(model, backend, device, dtype, vae, pipeline_options, models_dir, embeddings_dir, attention)


def _load(model, backend, device, dtype, vae, pipeline_options, models_dir, embeddings_dir, attention):
    import torch

    from .backends.torch_backend import TorchBackend
    from .pipelines import ModelInfo, Pipeline
    from .prompt import get_tokenizer
    from .sampling.schedules import betas_from_config, discrete_sigmas

    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not available; valid: {', '.join(BACKENDS)}")
    folders = model_folders(models_dir)
    if backend in ("onnxruntime", "tensorrt"):
        return _load_exported(backend, model, device, pipeline_options, folders, embeddings_dir)
    path = _resolve(_by_name(folders, "checkpoints", model))
    vae = _by_name(folders, "vae", vae) if vae is not None else None
    dtype = dtype or (torch.float16 if str(device).startswith("cuda") else torch.float32)
    if os.path.isfile(path):
        unet, text_encoder, vae_model, scheduler_config, family, model_hash = _load_single_file(path, dtype, vae)
        name = os.path.splitext(os.path.basename(path))[0]
    else:
        # The small config first: an unsupported model is refused before any weights are read.
        with open(os.path.join(path, "scheduler", "scheduler_config.json"), encoding="utf-8") as f:
            scheduler_config = json.load(f)
        _check_prediction_type(model, scheduler_config)
        unet, text_encoder, vae_model = load_components(path, dtype, vae)
        from .models.architectures import family_of

        family = family_of(int(unet.config.block_out_channels[0]), int(text_encoder.config.hidden_size))
        model_hash = None
        name = "toy" if model == "toy" else os.path.basename(os.path.normpath(path))
    model_sigmas = discrete_sigmas(betas_from_config(scheduler_config))
    info = ModelInfo(name=name, scaling_factor=float(vae_model.config.scaling_factor),
                     default_size=int(unet.config.sample_size) * 8,
                     latent_channels=int(vae_model.config.latent_channels),
                     unet_in_channels=int(unet.config.in_channels), hash=model_hash,
                     prediction_type=scheduler_config.get("prediction_type", "epsilon"), family=family)
    if vae is not None:
        from .loaders.hashes import autov2

        info.vae_name = os.path.basename(os.path.normpath(vae))
        info.vae_hash = autov2(vae) if os.path.isfile(vae) else None
    extra = info.unet_in_channels - info.latent_channels
    if extra not in (0, 5):  # 5: an inpainting UNet (mask + masked-image latents)
        kind = " (an instruct-pix2pix UNet, not supported yet)" if extra == info.latent_channels else ""
        raise ValueError(f"model {model!r}: the UNet takes {info.unet_in_channels} input channels for "
                         f"{info.latent_channels}-channel latents{kind}; supported: latents alone or inpainting "
                         f"(latents + 5)")
    from .backends.attention import set_attention

    set_attention(unet, attention)
    backend_impl = TorchBackend(unet, text_encoder, vae_model, device=device, dtype=dtype)
    pipe = Pipeline(backend_impl, get_tokenizer(), model_sigmas, info, **pipeline_options)
    pipe.model_folders = folders
    folders_embeddings = folders.folder("embeddings") if folders is not None else None
    _attach_embeddings(pipe, [d for d in (folders_embeddings, embeddings_dir) if d])
    return pipe


def _load_exported(backend: str, folder: str, device: str, pipeline_options: dict, folders, embeddings_dir):
    """An ONNX export folder on ONNX Runtime, or an engine folder on TensorRT."""
    import torch

    from .pipelines import ModelInfo, Pipeline
    from .prompt import get_tokenizer

    if not os.path.isdir(os.path.expanduser(str(folder))):
        raise ValueError(f"model {folder!r}: the {backend} backend runs an export folder "
                         "(`sdrt export MODEL --to onnx -o DIR`), not a model")
    folder = os.path.expanduser(str(folder))
    if backend == "onnxruntime":
        from .backends.onnxruntime_backend import OnnxRuntimeBackend, read_manifest

        manifest = read_manifest(folder)
        backend_impl = OnnxRuntimeBackend(folder, device=device, manifest=manifest)
    else:
        from .backends.tensorrt_backend import TensorRTBackend

        backend_impl = TensorRTBackend(folder, device=device)
        manifest = {**backend_impl.manifest, "text_width": int(backend_impl.token_embedding.shape[1])}
    info = ModelInfo(**manifest["model"])
    sigmas = torch.tensor(manifest["model_sigmas"], dtype=torch.float64)
    pipe = Pipeline(backend_impl, get_tokenizer(), sigmas, info, **pipeline_options)
    pipe.model_folders = folders
    _attach_embeddings(pipe, [d for d in (folders.folder("embeddings") if folders else None, embeddings_dir) if d],
                       width=int(manifest.get("text_width", 0)))
    return pipe


def _by_name(folders, kind: str, name: str) -> str:
    """A path as given when it exists (or "toy"), else a name inside the model folders."""
    if name == "toy" or os.path.exists(os.path.expanduser(str(name))) or folders is None:
        return name
    return folders.resolve(kind, name)


def _attach_embeddings(pipe, folders: list[str], width: int | None = None) -> None:
    """Textual inversions from `folders`, found in prompts by file name (A1111). Files for another
    model family or unreadable ones are skipped and listed in ``pipe.embeddings.skipped``."""
    from .loaders.embeddings import EmbeddingDatabase

    key = "clip_h" if pipe.info.family == "sd2" else "clip_l"
    db = EmbeddingDatabase(pipe.tokenizer, key, width or int(pipe.text_encoder.config.hidden_size))
    for folder in folders:
        db.load_dir(folder)
    pipe.embeddings = db
    if len(db):
        pipe.find_embedding = db.find_embedding


def _check_prediction_type(model: str, scheduler_config: dict) -> None:
    kind = scheduler_config.get("prediction_type", "epsilon")
    if kind not in ("epsilon", "v_prediction"):
        raise ValueError(f"model {model!r}: prediction_type={kind!r} is not supported; 'epsilon' or 'v_prediction'")


def _load_single_file(path: str, dtype, vae: str | None):
    from .loaders.hashes import autov2
    from .loaders.single_file import load_checkpoint

    from .loaders.single_file import read_shapes
    from .models.architectures import detect_architecture

    detected = detect_architecture(*read_shapes(path), source=path)  # refuse before reading gigabytes
    if detected.family == "sdxl":
        raise ValueError(f"{path}: an SDXL checkpoint; its modules load "
                                  "(sdrt.loaders.single_file.load_checkpoint) but SDXL generation is not built yet")
    if detected.unet_in_channels == 8:
        raise ValueError(f"{path}: an instruct-pix2pix checkpoint (8-channel UNet); not supported yet")
    ckpt = load_checkpoint(path, dtype=dtype)
    arch = ckpt.architecture
    vae_model = ckpt.vae if vae is None else load_vae(vae, dtype, config=dict(ckpt.vae.config))
    # A1111 writes the short sha256 (AutoV2) as "Model hash"
    return ckpt.unet, ckpt.text_encoders["text_encoder"], vae_model, ckpt.scheduler_config, arch.family, autov2(path)
