"""The Pipeline: prompt -> conditioning -> sampler loop over a backend -> VAE -> images + infotext.

``generate`` is a short driver over the stages (shared/DESIGN.md): prepare (params -> Job) ->
condition (job-scoped patches applied, textual inversion, prompt schedules) -> start point ->
sample -> decode -> post-process -> infotext. txt2img and img2img are thin keyword wrappers that
build a GenerationParams; features plug in through JobHooks.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from .. import kernels
from ..models.architectures import is_sdxl, text_components
from ..prompt.conditioning import ConditioningOptions, conditioning_for_batch, single_encoder
from ..prompt.sdxl import SDXLTextEncoder
from ..sampling.batching import PER_IMAGE, WHOLE_BATCH, BatchPolicy
from ..sampling.denoiser import DiscreteEpsDenoiser, Interrupted, Skipped
from ..sampling.guidance import CFGDenoiser
from ..sampling.sampler_info import SAMPLER_LOOPS
from .hooks import JobHooks
from .img2img_inputs import Img2ImgInputs
from .job import Batch, Job, prepare
from .job_infotext import batch_infotexts
from .networks import Networks
from .params import MAX_PROMPT_CHARS, GenerationParams, ParamError, _a  # noqa: F401  (MAX_PROMPT_CHARS: public limit)
from .patches import applied
from .postprocess import run_post_processors
from .refiner import RefinerSwitch, short_title
from .rng import ImageRNG
from .sdxl import SDXLAddedInputs
from .start_point import StartPoint


@dataclass
class Result:
    images: list[Image.Image]
    seeds: list[int]
    infotexts: list[str]
    prompts: list[str] = field(default_factory=list)
    interrupted: bool = False  # stopped by should_stop(): the last batch is its latest prediction

    def add(self, images: list[Image.Image], batch, prompts: list[str], infotexts: list[str]) -> None:
        self.images += images
        self.seeds += list(batch.seeds)
        self.prompts += prompts
        self.infotexts += infotexts


@dataclass
class ModelInfo:
    name: str
    scaling_factor: float
    default_size: int
    latent_channels: int = 4
    hash: Optional[str] = None
    unet_in_channels: int = 4  # 9 for inpainting UNets: latents + mask + masked-image latents
    prediction_type: str = "epsilon"  # or "v_prediction" (SD2 768-v)
    family: str = "sd1"        # sd1 | sd2 | toy | sdxl | sdxl-refiner | toy-xl (models.architectures)
    added_time_ids: int = 0    # SDXL: the size / crop (/ aesthetic score) ids its UNet embeds (6, refiner 5)
    vae_name: Optional[str] = None  # a VAE that replaces the model's own (A1111 writes file name and hash)
    vae_hash: Optional[str] = None

    @property
    def image_cond_channels(self) -> int:
        return self.unet_in_channels - self.latent_channels




class Pipeline:
    def __init__(self, backend, tokenizer, model_sigmas: torch.Tensor, info: ModelInfo, *,
                 batch_invariant: bool = True, sampler_loop: str = "python"):
        self.backend, self.tokenizer, self.info = backend, tokenizer, info
        if sampler_loop not in SAMPLER_LOOPS:
            raise ValueError(f"sampler_loop={sampler_loop!r}; valid: {', '.join(SAMPLER_LOOPS)}")
        # "cpp": the samplers the C++ loop covers run there (sdrt.sampling.native; equal results)
        self.sampler_loop = sampler_loop
        # batch_invariant: every image of a batch runs through the UNet and the VAE on its own, so it
        # is bit-identical to the same seed generated alone; else one call for the whole batch
        # (faster on a GPU; images then differ from single runs by float rounding, a level or so).
        self.batching: BatchPolicy = PER_IMAGE if batch_invariant else WHOLE_BATCH
        self.denoiser = DiscreteEpsDenoiser(backend.unet_forward, model_sigmas, info.prediction_type)
        # Textual-inversion lookup (token ids, position) -> (name, vectors, tokens consumed) | None;
        # filled by the embeddings loader.
        self.find_embedding = None
        self.embeddings = None      # the EmbeddingDatabase behind find_embedding (sdrt.load fills both)
        self.embedding_databases: dict = {}  # text encoder component -> its EmbeddingDatabase (use_embeddings)
        self.model_folders = None   # A1111's model folders, where LoRA names are looked up
        self._upscalers = None
        self.networks = Networks(self)
        from ..control.attach import PipelineControl  # here: sdrt.control imports pipelines.params

        self.control = PipelineControl(self)
        self.load_options: dict | None = None  # sdrt.load's arguments, for companion models
        self.source: str | None = None         # the model's real path (sdrt.load sets it)
        self._companions: dict = {}

    @property
    def upscalers(self):
        """The upscalers of this model's folders (built-in ones only without folders): what the
        hires fix's hr_upscaler names."""
        from ..postprocess.upscalers import Upscalers

        if self._upscalers is None or self._upscalers.folders is not self.model_folders:
            self._upscalers = Upscalers(self.model_folders, device=getattr(self.backend, "device", "cpu"))
        return self._upscalers

    # The loaded modules, as in a diffusers pipeline (torch backend; None on the exported ones).
    @property
    def unet(self):
        return getattr(self.backend, "unet", None)

    @property
    def vae(self):
        return getattr(self.backend, "vae", None)

    @property
    def text_encoder(self):
        return getattr(self.backend, "text_encoder", None)

    @property
    def text_encoder_2(self):
        """SDXL's OpenCLIP bigG (CLIPTextModelWithProjection); None for SD1 / SD2."""
        return getattr(self.backend, "text_encoder_2", None)

    def use_embeddings(self, databases: dict) -> None:
        """Textual inversions: one EmbeddingDatabase per text encoder component ("text_encoder",
        and "text_encoder_2" for SDXL), each holding that encoder's vectors."""
        self.embedding_databases = dict(databases)
        self.embeddings = next(iter(self.embedding_databases.values()), None)
        self.find_embedding = self.embeddings.find_embedding if self.embeddings is not None and len(self.embeddings) \
            else None

    def save_single_file(self, path: str, *, dtype: torch.dtype | None = torch.float16) -> None:
        """Write the loaded model (with any LoRAs merged by ``networks.merge``) as one A1111-loadable
        .safetensors file in the original layout."""
        from ..loaders.single_file import save_checkpoint
        from ..models.architectures import architecture_for

        arch = architecture_for(self.info.family, self.info.unet_in_channels, self.info.prediction_type)
        encoders = {name: getattr(self, name) for name in arch.text_encoders}
        save_checkpoint(path, arch, self.unet, self.vae, encoders, dtype=dtype)

    def decode(self, latents: torch.Tensor, policy: BatchPolicy | None = None) -> list[Image.Image]:
        vae_latents = kernels.unscale_latents(latents.contiguous(), self.info.scaling_factor)
        pixels = self._vae_call(self.backend.vae_decode, vae_latents, policy).contiguous().cpu()
        return [Image.fromarray(a) for a in kernels.to_rgb_uint8(pixels).numpy()]

    def _vae_call(self, fn, batch: torch.Tensor, policy: BatchPolicy | None = None) -> torch.Tensor:
        """fn over the batch, grouped as the batching policy says."""
        groups = (policy or self.batching).groups(batch.shape[0])
        if len(groups) == 1:
            return fn(batch)
        return torch.cat([fn(batch[g]) for g in groups])

    def encode(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """RGB images -> diffusion-space latents (the posterior mean: deterministic, where A1111
        samples the posterior with the global RNG)."""
        return self._encode_pixels(_to_pixels(images))

    def _encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        latents = self._vae_call(self.backend.vae_encode, pixels.contiguous())
        return kernels.scale_latents(latents.contiguous().cpu(), self.info.scaling_factor)

    def image_conditioning(self, batch_size: int, width: int, height: int,
                           sources: Sequence[Image.Image] | None = None,
                           mask: Image.Image | None = None) -> torch.Tensor | None:
        """An inpainting UNet's extra input (LDM's c_concat; A1111 inpainting_image_conditioning with
        inpainting_mask_weight 1): [mask, latents of the source with the masked part grey] along
        channels. The mask (white = repaint) is rounded to 0/1 and downsampled nearest to the latent
        size. No source (txt2img) or no mask: everything is masked, so the image is all grey.
        None for models without extra input channels."""
        if self.info.image_cond_channels == 0:
            return None
        if sources is None or mask is None:
            pixels, m = torch.zeros(batch_size, 3, height, width), torch.ones(1, 1, height, width)
        else:
            m = torch.from_numpy(np.round(np.asarray(mask.convert("L"), dtype=np.float32) / 255.0))[None, None]
            pixels = _to_pixels(sources) * (1 - m)
        latents = self._encode_pixels(pixels)
        m = torch.nn.functional.interpolate(m, size=latents.shape[-2:], mode="nearest")
        return torch.cat([m.expand(batch_size, -1, -1, -1), latents], dim=1)

    def generate(self, params: GenerationParams, hooks: JobHooks | None = None) -> Result:
        """Run one job: the stages of shared/DESIGN.md over `params`, with what `hooks` plug in.
        `hooks.callback(info)` runs after every model call (info also holds "iteration" and
        "n_iter"); `should_stop()` / `should_skip()` end the job / the current batch (A1111's
        interrupt and skip), that batch decoded from its latest prediction."""
        hooks = hooks or JobHooks()
        p = params.sized(self.info.default_size)
        p.validate()
        if p.enable_hr:
            from .hires import generate_hires

            return generate_hires(self, p, hooks)
        job = self.prepare(p, hooks)
        inputs = Img2ImgInputs.prepare(p) if p.is_img2img else None
        job.infotext.update(inputs.infotext if inputs is not None else {})
        patches = self.job_patches(job, hooks)
        paste_back = inputs.paste_back() if inputs is not None else None
        post = ([paste_back] if paste_back is not None else []) + list(hooks.post_processors)
        with applied(patches, self.backend):
            for patch in patches:
                job.infotext.update(patch.infotext)
            conds = self.condition(job)
            return self._run_batches(job, conds, inputs, post, hooks)

    def prepare(self, p: GenerationParams, hooks: JobHooks, *, control: bool = True) -> Job:
        """The prepare stage for this model (`p` sized and validated), with its ControlNet units
        unless `control` is False (a hires pass takes the first pass's)."""
        job = prepare(p, self.denoiser, self.info.latent_channels, hooks.batching or self.batching)
        if control:
            job.control = self.control.prepare(job)
        return job

    def job_patches(self, job: Job, hooks: JobHooks) -> list:
        """The job's model patches: its LoRAs (the first prompt's tags and `loras`), then the hooks'."""
        lora = self.networks.patch(job.lora_tags, job.params.loras)
        return ([lora] if lora is not None else []) + list(hooks.patches)

    def condition(self, job: Job, hires_of: tuple[int, int] | None = None) -> list:
        """The condition stage: every image's conds and uncond over the steps. `hires_of` (default
        the job's): (first-pass steps, hires steps) for a hires pass (prompt editing's A1111 hires
        form). SDXL zeroes an empty negative (A1111, diffusers' force_zeros_for_empty_prompt)."""
        used: set[str] = set()
        hires_of = hires_of or job.hires_of
        steps = hires_of[0] if hires_of else job.params.steps
        conds = conditioning_for_batch(job.prompts, job.negatives, steps, self._text_encoder_for(job, used),
                                       hires_steps=hires_of[1] if hires_of else None,
                                       zero_empty_negatives=is_sdxl(self.info.family))
        job.infotext.update(self._ti_hashes(used))
        return conds

    def _text_encoder_for(self, job: Job, used: set):
        """texts -> EncodedTexts for this model. A1111's SD2 always takes OpenCLIP's penultimate
        layer (the last of diffusers' 23) and ignores clip skip; SDXL ignores it too (prompt.sdxl)."""
        if is_sdxl(self.info.family):
            finders = {c: _recording(db.find_embedding if len(db) else None, used)
                       for c, db in self.embedding_databases.items()}
            return SDXLTextEncoder(self.tokenizer, self.backend.encode_text_sdxl, text_components(self.info.family),
                                   ConditioningOptions(), finders)
        sd2 = self.info.family == "sd2"
        opts = ConditioningOptions(clip_skip=1 if sd2 else job.params.clip_skip,
                                   find_embedding=_recording(self.find_embedding, used),
                                   **({"pad_id": 0} if sd2 else {}))
        return single_encoder(self.tokenizer, self.backend.encode_text, opts)

    def model_inputs(self, job: Job, conds: list) -> list:
        """The UNet inputs the model itself needs besides latents and context (SDXL's pooled text
        and size ids), as extra inputs ahead of the hooks'."""
        if not self.info.added_time_ids:
            return []
        width, height = job.size_ids or (job.params.width, job.params.height)
        return [SDXLAddedInputs.for_job(conds, self.info.added_time_ids, width, height)]

    def noise_start(self, job: Job) -> StartPoint:
        """Where a txt2img batch starts: noise (and an inpainting UNet's "everything masked" input)."""
        return StartPoint(image_cond=self.image_conditioning(job.params.batch_size, job.params.width,
                                                            job.params.height))

    def _run_batches(self, job: Job, conds: list, inputs: Img2ImgInputs | None, post: list,
                     hooks: JobHooks) -> Result:
        result, noise_start = Result([], [], [], []), None
        for batch in job.batches():
            if hooks.start_point is not None:
                start = hooks.start_point(batch)
            elif inputs is not None:
                start = inputs.start_point(self, batch.iteration, len(batch.seeds))
            else:  # the same for every batch
                noise_start = noise_start or self.noise_start(job)
                start = noise_start
            latents, stop = self.sample(job, batch, start, conds, hooks)
            images = run_post_processors(post, self.decode(latents, job.policy), batch)
            strength = start.strength if start.latents is not None else None
            result.add(images, batch, job.written_prompts, batch_infotexts(job, batch, self.info, strength))
            if stop is not None and not isinstance(stop, Skipped):
                result.interrupted = True
                break
        return result

    def sample(self, job: Job, batch: Batch, start: StartPoint, conds: list,
                hooks: JobHooks) -> tuple[torch.Tensor, Optional[Interrupted]]:
        """The sample stage for one batch: (latents to decode, the interruption if any)."""
        p = job.params
        rng = ImageRNG(job.latent_shape, batch.seeds, subseeds=batch.subseeds, subseed_strength=p.subseed_strength,
                       eta_noise_seed_delta=p.eta_noise_seed_delta)
        run, x, kept = start.begin(job.sampler, job.sigmas, p.steps, rng.first(), job.denoiser)
        control = self.control.inputs(job.control, len(run) - 1, p.width, p.height, hires=job.hires_of is not None)
        denoiser = self.guided_denoiser(job, conds, start, kept, hooks, control=control)
        refiner = self.refiner_for(p, hooks)
        if refiner is not None:
            denoiser = RefinerSwitch(denoiser, lambda: refiner.guided_denoiser(job, refiner.condition(job), start, kept,
                                                                               hooks, own_model=True),
                                     p.refiner_switch_at, self.denoiser.sigmas,
                                     on_switch=lambda: job.infotext.update({"Refiner": short_title(refiner.info),
                                                                            "Refiner switch at": p.refiner_switch_at}))
        options = dict(job.sampler_options)
        noise_sampler = job.sampler.noise_sampler(x, job.sigmas, batch.seeds)
        if noise_sampler is not None:
            options["noise_sampler"] = noise_sampler
        stop = None
        try:
            sample = job.sampler.runner(self.sampler_loop, options)
            latents = sample(denoiser, x, run, callback=_step_callback(hooks.callback, batch, p.n_iter, control),
                             noise=rng.next, **options)
            latents = job.sampler.finish(latents, run)
        except Interrupted as e:
            stop = e
            # before any prediction: the clean init latents (A1111's last_latent), else the noise
            latents = denoiser.last_denoised if denoiser.last_denoised is not None else \
                start.latents if start.latents is not None else x
        if kept is not None:
            latents = torch.lerp(kept, latents, 1 - start.keep)  # keep the unmasked latents exactly
        return latents, stop

    def guided_denoiser(self, job: Job, conds: list, start: StartPoint, kept, hooks: JobHooks, *,
                        own_model: bool = False, control=None) -> CFGDenoiser:
        """Guidance over this model for one batch. own_model: the job was prepared on another model
        (a refiner taking over): the sampler's view of this one's UNet replaces the job's.
        `control`: the run's ControlNet input (self.control.inputs), if any."""
        inner = job.sampler.model_denoiser(self.denoiser) if own_model else job.denoiser
        image_cond = start.image_cond if self.info.image_cond_channels else None  # a plain refiner: none
        return CFGDenoiser(inner, conds, job.params.cfg_scale, image_cond=image_cond, init_latent=kept,
                           keep_mask=start.keep, should_stop=hooks.should_stop, should_skip=hooks.should_skip,
                           policy=job.policy, extra_inputs=self.model_inputs(job, conds) + ([control] if control else [])
                           + list(hooks.extra_inputs))

    def refiner_for(self, p: GenerationParams, hooks: JobHooks):
        """The refiner pipeline of a job (hooks.refiner_pipeline, else refiner_checkpoint loaded with
        this model's options and kept), or None when the job has none or switches at 1.0."""
        if not p.refiner_checkpoint or p.refiner_switch_at >= 1.0:
            return None
        refiner = hooks.refiner_pipeline or self.companion(p.refiner_checkpoint, "refiner_checkpoint")
        if refiner is self:  # A1111: the refiner is the loaded model, nothing to switch to
            return None
        mine, theirs = self.info, refiner.info
        if theirs.image_cond_channels and theirs.image_cond_channels != mine.image_cond_channels:
            raise ParamError("refiner_checkpoint", f"refiner_checkpoint={p.refiner_checkpoint!r}: an inpainting "
                             "refiner needs an inpainting model before it")
        if (mine.latent_channels, mine.scaling_factor) != (theirs.latent_channels, theirs.scaling_factor):
            raise ParamError("refiner_checkpoint", f"refiner_checkpoint={p.refiner_checkpoint!r}: its latent space "
                             f"({theirs.latent_channels} channels, scaling factor {theirs.scaling_factor}) differs from "
                             f"the model's ({mine.latent_channels}, {mine.scaling_factor})")
        return refiner

    def companion(self, name: str, field: str = "model"):
        """Another model named in a job (a refiner, a hires checkpoint), loaded with this model's
        load options (backend, device, dtype, model folders) the first time and kept, keyed by its
        file and modification time; this pipeline itself when the name is its own model."""
        if self.load_options is None:
            raise ParamError(field, f"{field}={name!r}: this pipeline was not made by sdrt.load; pass the loaded "
                                    "model in JobHooks")
        from ..loading import load, model_source

        try:
            source = model_source(name, self.load_options.get("models_dir"))
            if source == self.source:
                return self
            key = (source, os.stat(source).st_mtime_ns)
            if key not in self._companions:
                self._companions = {k: v for k, v in self._companions.items() if k[0] != source}  # a changed file
                self._companions[key] = load(source, **self.load_options)
        except (OSError, ValueError) as e:
            raise ParamError(field, f"{field}={name!r}: {e}") from e
        return self._companions[key]

    def txt2img(self, prompt: str | Sequence[str], negative_prompt: str | Sequence[str] = "", *,
                callback: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] | None = None,
                should_skip: Callable[[], bool] | None = None, **params) -> Result:
        """Text to image. `params`: the GenerationParams fields (A1111's names and the Python API's
        defaults: steps=20, sampler_name="Euler a", cfg_scale=7.0, width/height the model's native
        size, seed=-1, ...). Image i of the job uses seed + i (A1111). `loras`: [(name_or_path,
        weight) | (name_or_path, te_weight, unet_weight)], applied for this job together with the
        first prompt's <lora:...> tags. enable_hr with the hr_* fields: A1111's hires fix
        (sdrt.pipelines.hires; docs/upscaling.md)."""
        _refuse_fields(params, "img2img", method="txt2img")
        return self.generate(GenerationParams(prompt=prompt, negative_prompt=negative_prompt, **params),
                             JobHooks(callback=callback, should_stop=should_stop, should_skip=should_skip))

    def img2img(self, init_images: Image.Image | Sequence[Image.Image], prompt: str | Sequence[str],
                negative_prompt: str | Sequence[str] = "", *, callback: Callable[[dict], None] | None = None,
                should_stop: Callable[[], bool] | None = None, should_skip: Callable[[], bool] | None = None,
                **params) -> Result:
        """Image to image, and inpainting when `mask` is given (white = repaint). A1111 semantics:
        resize_mode 0/1/2 (just resize / crop and resize / resize and fill), denoising_strength runs
        the last int(strength * steps) + 1 steps of the schedule, mask_blur in pixels,
        inpainting_fill 0 fill / 1 original / 2 latent noise / 3 latent nothing, and the original
        pixels restored outside the blurred mask. inpaint_full_res ("inpaint only masked"): only the
        mask's bounding box plus inpaint_full_res_padding pixels, widened to the width:height ratio,
        is inpainted at width x height and pasted back into the full-size original. Other `params`
        as for txt2img."""
        _refuse_fields(params, "txt2img", method="img2img")
        inits = [init_images] if isinstance(init_images, Image.Image) else init_images
        if not isinstance(inits, (list, tuple)) or not inits:
            raise ValueError("init_images: expected a PIL image or a non-empty list of PIL images")
        return self.generate(GenerationParams(init_images=list(inits), prompt=prompt, negative_prompt=negative_prompt,
                                              **params),
                             JobHooks(callback=callback, should_stop=should_stop, should_skip=should_skip))

    def _ti_hashes(self, names: set[str]) -> dict:
        """A1111's "TI hashes": each embedding used (prompt or negative) with its file's short sha256."""
        if not names or self.embeddings is None:
            return {}
        from ..loaders.hashes import sha256

        found = [(n, self.embeddings.embeddings[n].path) for n in sorted(names) if n in self.embeddings.embeddings]
        return {"TI hashes": ", ".join(f"{n}: {sha256(p)[:12]}" for n, p in found if p)} if found else {}


def _step_callback(callback, batch: Batch, n_iter: int, control=None):
    """The sampler's per-step callback: the ControlNet input's step count, then the caller's."""
    if callback is None and control is None:
        return None

    def on_step(d: dict) -> None:
        if control is not None:
            control.on_step(d)
        if callback is not None:
            callback({**d, "iteration": batch.iteration, "n_iter": int(n_iter)})
    return on_step


def _refuse_fields(params: dict, other_mode: str, *, method: str) -> None:
    for f in dataclasses.fields(GenerationParams):
        if f.name in params and f.metadata["only"] == other_mode:
            raise TypeError(f"{method}() got an unexpected keyword argument {f.name!r} ({_a(other_mode)} {other_mode} parameter)")


def _recording(find_embedding, used: set):
    """The textual-inversion hook, noting which embeddings a job used (for its infotext)."""
    if find_embedding is None:
        return None

    def find(tokens, position):
        found = find_embedding(tokens, position)
        if found is not None:
            used.add(found[0])
        return found
    return find


def _to_pixels(images: Sequence[Image.Image]) -> torch.Tensor:
    """RGB images -> (N, 3, H, W) float32 in [-1, 1]."""
    pixels = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images]) / 127.5 - 1.0
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
