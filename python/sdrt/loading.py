"""sdrt.load: a model name or folder -> a Pipeline on a backend."""
from __future__ import annotations

import contextlib
import json
import os
from importlib.resources import files
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")
EXPORTED_BACKENDS = BACKENDS[1:]  # they run export folders, not models


# dtype names the CLI and sdrt.load take, as torch's
DTYPE_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def resolve_dtype(dtype):
    """None (the backend's default), a torch dtype, or a name of DTYPE_NAMES -> a torch dtype or None."""
    import torch

    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPE_NAMES:
        raise ValueError(f"dtype={dtype!r}; valid: {', '.join(DTYPE_NAMES)} (or a torch dtype)")
    return getattr(torch, DTYPE_NAMES[dtype])


# the shipped models, by name: folders under sdrt/toy (diffusers layout)
SHIPPED_MODELS = {"toy": "weights", "toy-xl": "weights_xl"}


def toy_model_path(name: str = "toy") -> str:
    """The folder of a shipped toy model (diffusers layout): "toy" or "toy-xl"."""
    if name not in SHIPPED_MODELS:
        raise ValueError(f"model={name!r} is not a shipped model; valid: {', '.join(SHIPPED_MODELS)}")
    return str(files("sdrt.toy") / SHIPPED_MODELS[name])


CHECKPOINT_EXTENSIONS = (".safetensors", ".ckpt")


def _existing_path(model: str) -> str:
    """A shipped model's folder, or `model` as a path (~ expanded) that must exist."""
    path = toy_model_path(model) if model in SHIPPED_MODELS else os.path.expanduser(str(model))
    if not os.path.exists(path):
        raise FileNotFoundError(f"model {model!r}: no such file or folder ({path})")
    return path


def _resolve(model: str) -> str:
    path = _existing_path(model)
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
    """(unet, text_encoder, vae) of an SD1-layout diffusers folder (see load_folder)."""
    parts = load_folder(folder, dtype, vae)
    return parts["unet"], parts["text_encoder"], parts["vae"]


def load_folder(folder: str, dtype: "torch.dtype", vae: str | None = None) -> dict:
    """The modules of a diffusers folder, read from local files only: "unet", "vae" and the text
    encoders its model_index.json lists ("text_encoder" CLIPTextModel, "text_encoder_2"
    CLIPTextModelWithProjection for SDXL). A ``shared_components.json`` maps components kept in
    another folder (toy-XL shares the toy's text_encoder and vae); `vae` overrides the VAE."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    index = _read_json(os.path.join(folder, "model_index.json"))
    shared_file = os.path.join(folder, "shared_components.json")
    shared = _read_json(shared_file) if os.path.isfile(shared_file) else {}

    def where(name: str) -> str:
        return os.path.normpath(os.path.join(folder, shared.get(name, name)))

    common = dict(torch_dtype=dtype, local_files_only=True)
    classes = {"text_encoder": CLIPTextModel, "text_encoder_2": CLIPTextModelWithProjection}
    with _quiet_hf_loading():
        parts = {"unet": UNet2DConditionModel.from_pretrained(where("unet"), **common)}
        for name, cls in classes.items():
            if (index.get(name) or [None])[0] is not None:
                parts[name] = cls.from_pretrained(where(name), **common)
        like = _read_json(os.path.join(where("vae"), "config.json")) if vae is not None and os.path.isfile(vae) else None
        parts["vae"] = load_vae(vae if vae is not None else where("vae"), dtype, config=like)
    return parts


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


def load(model: str = "toy", *, backend: str = "torch", device: str = "cpu", dtype: torch.dtype | str | None = None,
         vae: str | None = None, batch_invariant: bool = True, models_dir: str | None = None,
         embeddings_dir: str | None = None, attention: str = "sdpa", sampler_loop: str = "python",
         compile: str = "off"):
    """Load a model (``"toy"``, a diffusers folder, or a single-file .safetensors / .ckpt checkpoint
    of SD1.x / SD2.x incl. inpainting) and return a :class:`sdrt.pipelines.Pipeline`.

    models_dir (or $SDRT_MODELS_ROOT): A1111's layout (models/Stable-diffusion, Lora, VAE,
    embeddings); `model`, `vae` and LoRA names are then looked up there (only there: no path
    traversal), and the embeddings folder's textual inversions are usable in prompts by file name.
    embeddings_dir: another folder of embeddings.
    backend: "torch"; or, with `model` an export folder (``sdrt export --to onnx``), "onnxruntime" or
    "openvino" (CPU); "tensorrt" runs an engine folder.
    dtype: a torch dtype or "fp32" / "fp16" / "bf16". torch: the weights' dtype (default fp32 on
    the CPU, fp16 on CUDA); bf16 on the CPU is faster but no longer gives the fp32 picture of a seed.
    openvino: its inference precision (default bf16 where the CPU has bf16 arithmetic, else fp32).
    attention (torch backend): "sdpa" (torch's scaled_dot_product_attention, the default) or "sdrt"
    (sdrt's fused CPU kernel as the custom op sdrt::attention; on CUDA it falls back to SDPA).
    compile (torch backend): "off" (eager, the default), or a torch.compile mode ("default",
    "reduce-overhead", "max-autotune") for the UNet on static shapes in channels_last
    (backends/compiled_unet.py). The first job at each size compiles; results match eager within
    float rounding, so a seed's picture may differ from eager's in the last bits.

    batch_invariant (default True): each image of a batch runs through the UNet and VAE on its own,
    so a batch with seeds s..s+3 is bit-identical to four single runs; False batches them into one
    call for throughput (results then differ from single runs by float rounding).
    sampler_loop: "python" (the reference samplers, the default) or "cpp" (the C++ loop,
    sdrt._C.sample_loop, for the samplers it covers; the same results)."""
    from .backends.compiled_unet import check_compile_mode
    from .sampling import SAMPLER_LOOPS

    if sampler_loop not in SAMPLER_LOOPS:  # before any loading
        raise ValueError(f"sampler_loop={sampler_loop!r}; valid: {', '.join(SAMPLER_LOOPS)}")
    check_compile_mode(compile)
    if compile != "off" and backend != "torch":
        raise ValueError(f"compile={compile!r}: only the torch backend compiles its UNet (backend={backend!r} "
                         "runs its export's own graph)")
    pipeline_options = {"batch_invariant": batch_invariant, "sampler_loop": sampler_loop}
    dtype = resolve_dtype(dtype)
    pipe = _load(model, backend, device, dtype, vae, pipeline_options, models_dir, embeddings_dir,
                 {"attention": attention, "compile_mode": compile})
    # what a job's companion models (refiner, hires checkpoint) are loaded with; not the VAE
    pipe.load_options = dict(backend=backend, device=device, dtype=dtype, batch_invariant=batch_invariant,
                             models_dir=models_dir, embeddings_dir=embeddings_dir, attention=attention,
                             sampler_loop=sampler_loop, compile=compile)
    return pipe


def _load(model, backend, device, dtype, vae, pipeline_options, models_dir, embeddings_dir, torch_options):
    """torch_options: the torch backend's attention and compile_mode."""
    import torch

    from .backends.torch_backend import TorchBackend
    from .pipelines import ModelInfo, Pipeline
    from .prompt import get_tokenizer
    from .sampling.schedules import betas_from_config, discrete_sigmas

    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not available; valid: {', '.join(BACKENDS)}")
    folders = model_folders(models_dir)
    if backend in EXPORTED_BACKENDS:
        return _load_exported(backend, model, device, dtype, pipeline_options, folders, embeddings_dir)
    path = _resolve(_by_name(folders, "checkpoints", model))
    vae = _by_name(folders, "vae", vae) if vae is not None else None
    dtype = dtype or (torch.float16 if str(device).startswith("cuda") else torch.float32)
    if os.path.isfile(path):
        parts, scheduler_config, family, model_hash = _load_single_file(path, dtype, vae)
        name = os.path.splitext(os.path.basename(path))[0]
    else:
        # The small config first: an unsupported model is refused before any weights are read.
        with open(os.path.join(path, "scheduler", "scheduler_config.json"), encoding="utf-8") as f:
            scheduler_config = json.load(f)
        _check_prediction_type(model, scheduler_config)
        parts = load_folder(path, dtype, vae)
        from .models.architectures import family_of

        first = parts.get("text_encoder", parts.get("text_encoder_2"))
        family = family_of(int(parts["unet"].config.block_out_channels[0]), int(first.config.hidden_size),
                           text_encoders=[k for k in parts if k.startswith("text_encoder")])
        model_hash = None
        name = _shipped_name(path) or os.path.basename(os.path.normpath(path))
    unet, vae_model = parts["unet"], parts["vae"]
    model_sigmas = discrete_sigmas(betas_from_config(scheduler_config))
    info = ModelInfo(name=name, scaling_factor=float(vae_model.config.scaling_factor),
                     default_size=int(unet.config.sample_size) * 8,
                     latent_channels=int(vae_model.config.latent_channels),
                     unet_in_channels=int(unet.config.in_channels), hash=model_hash,
                     prediction_type=scheduler_config.get("prediction_type", "epsilon"), family=family,
                     added_time_ids=_added_time_ids(parts))
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

    set_attention(unet, torch_options["attention"])
    backend_impl = TorchBackend(unet, parts.get("text_encoder"), vae_model, text_encoder_2=parts.get("text_encoder_2"),
                                device=device, dtype=dtype, compile_mode=torch_options["compile_mode"])
    pipe = Pipeline(backend_impl, get_tokenizer(), model_sigmas, info, **pipeline_options)
    pipe.model_folders, pipe.source = folders, os.path.realpath(path)
    folders_embeddings = folders.folder("embeddings") if folders is not None else None
    _attach_embeddings(pipe, [d for d in (folders_embeddings, embeddings_dir) if d])
    return pipe


def _load_exported(backend: str, folder: str, device: str, dtype, pipeline_options: dict, folders, embeddings_dir):
    """An ONNX export folder on ONNX Runtime or OpenVINO (dtype: its inference precision), or an
    engine folder on TensorRT."""
    import torch

    from .pipelines import ModelInfo, Pipeline
    from .prompt import get_tokenizer

    if not os.path.isdir(os.path.expanduser(str(folder))):
        raise ValueError(f"model {folder!r}: the {backend} backend runs an export folder "
                         "(`sdrt export MODEL --to onnx -o DIR`), not a model")
    folder = os.path.expanduser(str(folder))
    if dtype is not None and backend != "openvino":
        how = "sdrt export --fp16 for fp16 weights" if backend == "onnxruntime" else "set when its engines are built"
        raise ValueError(f"dtype={dtype}: the {backend} backend runs the export's own precision ({how})")
    if backend == "onnxruntime":
        from .backends.onnxruntime_backend import OnnxRuntimeBackend

        backend_impl = OnnxRuntimeBackend(folder, device=device)
    elif backend == "openvino":
        from .backends.openvino_backend import OpenVinoBackend

        backend_impl = OpenVinoBackend(folder, device=device, dtype=dtype)
    else:
        from .backends.tensorrt_backend import TensorRTBackend

        backend_impl = TensorRTBackend(folder, device=device)
    # the model facts (family, SDXL's time-id count) make an SDXL export an SDXL pipeline
    info = ModelInfo(**backend_impl.manifest["model"])
    sigmas = torch.tensor(backend_impl.manifest["model_sigmas"], dtype=torch.float64)
    pipe = Pipeline(backend_impl, get_tokenizer(), sigmas, info, **pipeline_options)
    pipe.model_folders, pipe.source = folders, os.path.realpath(folder)
    # no text encoder modules here: each encoder's embedding width is its exported token table's
    _attach_embeddings(pipe, [d for d in (folders.folder("embeddings") if folders else None, embeddings_dir) if d],
                       widths=backend_impl.text_widths)
    return pipe


def _shipped_name(path: str) -> str | None:
    """"toy" / "toy-xl" for a shipped model's folder, however it was named (a companion model is
    loaded by its real path)."""
    real = os.path.realpath(path)
    return next((name for name in SHIPPED_MODELS if os.path.realpath(toy_model_path(name)) == real), None)


def model_source(model: str, models_dir: str | None = None) -> str:
    """The real path sdrt.load reads for `model` (a shipped name, a path, or a checkpoint name in
    the model folders): what tells two names of one model apart from two models."""
    return os.path.realpath(_existing_path(_by_name(model_folders(models_dir), "checkpoints", model)))


def _by_name(folders, kind: str, name: str) -> str:
    """A path as given when it exists (or a shipped model's name), else a name inside the model folders."""
    if name in SHIPPED_MODELS or os.path.exists(os.path.expanduser(str(name))) or folders is None:
        return name
    return folders.resolve(kind, name)


def _added_time_ids(parts: dict) -> int:
    """How many SDXL size / crop ids the UNet embeds (0 for UNets without text_time embedding)."""
    unet = parts["unet"]
    if getattr(unet.config, "addition_embed_type", None) != "text_time":
        return 0
    if "text_encoder_2" not in parts:
        raise ValueError("an SDXL UNet (text_time added embedding) needs text_encoder_2 for its pooled text input")
    from .pipelines.sdxl import time_id_count

    return time_id_count(unet.config, int(parts["text_encoder_2"].config.projection_dim))


# the embedding key of each text encoder, per family (loaders.embeddings)
_EMBEDDING_KEYS = {"sd2": {"text_encoder": "clip_h"}, "sdxl-refiner": {"text_encoder_2": "clip_g"}}
_SDXL_KEYS = {"text_encoder": "clip_l", "text_encoder_2": "clip_g"}


def _attach_embeddings(pipe, folders: list[str], widths: dict | None = None) -> None:
    """Textual inversions from `folders`, found in prompts by file name (A1111), one database per
    text encoder (SDXL's hold its clip_l / clip_g vectors). Files for another model family or
    unreadable ones are skipped and listed in ``pipe.embeddings.skipped``. `widths`: the embedding
    width per text encoder component where there are no modules to ask (exported backends); an
    encoder with neither was not exported and gets no database."""
    from .loaders.embeddings import EmbeddingDatabase
    from .models.architectures import is_sdxl

    family = pipe.info.family
    keys = _EMBEDDING_KEYS.get(family) or (_SDXL_KEYS if is_sdxl(family) else {"text_encoder": "clip_l"})
    model_encoders = tuple(_SDXL_KEYS.values()) if is_sdxl(family) else None
    databases = {}
    for component, key in keys.items():
        encoder = getattr(pipe, component)
        if encoder is None and component not in (widths or {}):
            continue
        dim = int(widths[component]) if component in (widths or {}) else int(encoder.config.hidden_size)
        db = EmbeddingDatabase(pipe.tokenizer, key, dim, model_encoders=model_encoders)
        for folder in folders:
            db.load_dir(folder)
        databases[component] = db
    _keep_common(databases)
    pipe.use_embeddings(databases)


def _keep_common(databases: dict) -> None:
    """SDXL's encoders must agree on every embedding (each takes its own vectors at the same
    places): one that only some databases accepted is taken out of all, with the reason."""
    if len(databases) < 2:
        return
    common = set.intersection(*(set(db.names()) for db in databases.values()))
    for db in databases.values():
        for name in set(db.names()) - common:
            db.remove(name, "its vectors fit only some of the model's text encoders")


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
    if detected.unet_in_channels == 8:
        raise ValueError(f"{path}: an instruct-pix2pix checkpoint (8-channel UNet); not supported yet")
    ckpt = load_checkpoint(path, dtype=dtype)
    arch = ckpt.architecture
    vae_model = ckpt.vae if vae is None else load_vae(vae, dtype, config=dict(ckpt.vae.config))
    # A1111 writes the short sha256 (AutoV2) as "Model hash"
    parts = {"unet": ckpt.unet, "vae": vae_model, **ckpt.text_encoders}
    return parts, ckpt.scheduler_config, arch.family, autov2(path)
