"""The Pipeline: prompt -> conditioning -> sampler loop over a backend -> VAE -> images + infotext.

txt2img and img2img (with inpainting) share one generation core, ``_generate``; img2img only adds
an init latent (and a mask) to start from, as in A1111's processing.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from .. import __version__, kernels
from ..prompt.conditioning import ConditioningOptions, conditioning_for_batch
from ..sampling import img2img_sigmas, resolve_sampler, schedule_label, sigmas_for
from ..sampling.brownian import BrownianTreeNoise
from ..sampling.denoiser import CFGDenoiser, DiscreteEpsDenoiser, Interrupted, Skipped
from . import images as imgs
from .infotext import create_infotext
from .networks import Networks
from .rng import ImageRNG, resolve_seed

MAX_PROMPT_CHARS = 65536  # ~870 chunks of 75 tokens: far past any useful prompt, refused before any work


@dataclass
class Result:
    images: list[Image.Image]
    seeds: list[int]
    infotexts: list[str]
    prompts: list[str] = field(default_factory=list)
    interrupted: bool = False  # stopped by should_stop(): the last batch is its latest prediction


@dataclass
class ModelInfo:
    name: str
    scaling_factor: float
    default_size: int
    latent_channels: int = 4
    hash: Optional[str] = None
    unet_in_channels: int = 4  # 9 for inpainting UNets: latents + mask + masked-image latents
    prediction_type: str = "epsilon"  # or "v_prediction" (SD2 768-v)
    family: str = "sd1"        # sd1 | sd2 | toy: SD2's tokenizer pads with 0 after the first EOS
    vae_name: Optional[str] = None  # a VAE that replaces the model's own (A1111 writes file name and hash)
    vae_hash: Optional[str] = None

    @property
    def image_cond_channels(self) -> int:
        return self.unet_in_channels - self.latent_channels


@dataclass
class _Init:
    """img2img's starting point for one iteration's batch."""
    latents: torch.Tensor                 # (B, C, h, w), diffusion space
    strength: float
    keep: Optional[torch.Tensor] = None   # (B, C, h, w): 1 = keep the init latent (inpainting)
    fill: str = "original"
    originals: Optional[list[Image.Image]] = None  # pasted back outside the mask
    overlay_masks: Optional[list[Image.Image]] = None
    paste_region: Optional[tuple[int, int, int, int]] = None  # inpaint only masked: where the result goes
    image_cond: Optional[torch.Tensor] = None  # inpainting UNets' extra input channels


SAMPLER_LOOPS = ("python", "cpp")


class Pipeline:
    def __init__(self, backend, tokenizer, model_sigmas: torch.Tensor, info: ModelInfo, *,
                 batch_invariant: bool = True, sampler_loop: str = "python"):
        self.backend, self.tokenizer, self.info = backend, tokenizer, info
        # "cpp": the samplers the C++ loop covers run there (sdrt.sampling.native; equal results)
        self.sampler_loop = sampler_loop
        # True: every image of a batch runs through the UNet and the VAE on its own, so it is
        # bit-identical to the same seed generated alone; False: one call for the whole batch (faster
        # on a GPU; images then differ from single runs by float rounding, a level or so).
        self.batch_invariant = batch_invariant
        self.denoiser = DiscreteEpsDenoiser(backend.unet_forward, model_sigmas, info.prediction_type)
        # Textual-inversion lookup (token ids, position) -> (name, vectors, tokens consumed) | None;
        # filled by the embeddings loader.
        self.find_embedding = None
        self.embeddings = None      # the EmbeddingDatabase behind find_embedding (sdrt.load fills both)
        self.model_folders = None   # A1111's model folders, where LoRA names are looked up
        self.networks = Networks(self)

    # The loaded modules, as in a diffusers pipeline (torch backend).
    @property
    def unet(self):
        return self.backend.unet

    @property
    def vae(self):
        return self.backend.vae

    @property
    def text_encoder(self):
        return self.backend.text_encoder

    def save_single_file(self, path: str, *, dtype: torch.dtype | None = torch.float16) -> None:
        """Write the loaded model (with any LoRAs merged by ``networks.merge``) as one A1111-loadable
        .safetensors file in the original layout."""
        from ..loaders.single_file import save_checkpoint
        from ..models.architectures import architecture_for

        arch = architecture_for(self.info.family, self.info.unet_in_channels, self.info.prediction_type)
        save_checkpoint(path, arch, self.unet, self.vae, {"text_encoder": self.text_encoder}, dtype=dtype)

    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        vae_latents = kernels.unscale_latents(latents.contiguous(), self.info.scaling_factor)
        pixels = self._vae_call(self.backend.vae_decode, vae_latents).contiguous().cpu()
        return [Image.fromarray(a) for a in kernels.to_rgb_uint8(pixels).numpy()]

    def _vae_call(self, fn, batch: torch.Tensor) -> torch.Tensor:
        """fn over the batch, one image per call when batch_invariant."""
        if not self.batch_invariant or batch.shape[0] == 1:
            return fn(batch)
        return torch.cat([fn(batch[i:i + 1]) for i in range(batch.shape[0])])

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

    def txt2img(self, prompt: str | Sequence[str], negative_prompt: str | Sequence[str] = "", *, steps: int = 20,
                sampler_name: str = "Euler a", scheduler: str = "Automatic", cfg_scale: float = 7.0,
                width: int | None = None, height: int | None = None, seed: int = -1, batch_size: int = 1,
                n_iter: int = 1, clip_skip: int = 1, eta: float | None = None, s_churn: float = 0.0, s_tmin: float = 0.0,
                s_tmax: float = float("inf"), s_noise: float = 1.0, subseed: int = -1, subseed_strength: float = 0.0,
                eta_noise_seed_delta: int = 0, callback: Callable[[dict], None] | None = None,
                should_stop: Callable[[], bool] | None = None, loras: Sequence | None = None,
                should_skip: Callable[[], bool] | None = None) -> Result:
        """Text to image. `width`/`height` default to the model's native size. Image i of the job
        uses seed + i (A1111). `loras`: [(name_or_path, weight) | (name_or_path, te_weight,
        unet_weight)], applied for this job together with the first prompt's <lora:...> tags."""
        return self._generate(
            prompt=prompt, negative_prompt=negative_prompt, steps=steps, sampler_name=sampler_name,
            scheduler=scheduler, cfg_scale=cfg_scale, width=width, height=height, seed=seed, batch_size=batch_size,
            n_iter=n_iter, clip_skip=clip_skip, eta=eta, s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax,
            s_noise=s_noise, subseed=subseed, subseed_strength=subseed_strength,
            eta_noise_seed_delta=eta_noise_seed_delta, callback=callback, should_stop=should_stop, init_for=None, loras=loras,
            should_skip=should_skip)

    def img2img(self, init_images: Image.Image | Sequence[Image.Image], prompt: str | Sequence[str],
                negative_prompt: str | Sequence[str] = "", *, denoising_strength: float = 0.75, resize_mode: int = 0,
                mask: Image.Image | None = None, mask_blur: float = 4, inpainting_fill: int = 1,
                inpainting_mask_invert: bool = False, inpaint_full_res: bool = False,
                inpaint_full_res_padding: int = 32, steps: int = 20, sampler_name: str = "Euler a",
                scheduler: str = "Automatic", cfg_scale: float = 7.0, width: int | None = None,
                height: int | None = None, seed: int = -1, batch_size: int = 1, n_iter: int = 1, clip_skip: int = 1,
                eta: float | None = None, s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"),
                s_noise: float = 1.0, subseed: int = -1, subseed_strength: float = 0.0,
                eta_noise_seed_delta: int = 0, callback: Callable[[dict], None] | None = None,
                should_stop: Callable[[], bool] | None = None, loras: Sequence | None = None,
                should_skip: Callable[[], bool] | None = None) -> Result:
        """Image to image, and inpainting when `mask` is given (white = repaint). A1111 semantics:
        resize_mode 0/1/2 (just resize / crop and resize / resize and fill), denoising_strength runs
        the last int(strength * steps) + 1 steps of the schedule, mask_blur in pixels,
        inpainting_fill 0 fill / 1 original / 2 latent noise / 3 latent nothing, and the original
        pixels restored outside the blurred mask. inpaint_full_res ("inpaint only masked"): only the
        mask's bounding box plus inpaint_full_res_padding pixels, widened to the width:height ratio,
        is inpainted at width x height and pasted back into the full-size original."""
        inits = [init_images] if isinstance(init_images, Image.Image) else list(init_images)
        if not inits or not all(isinstance(im, Image.Image) for im in inits):
            raise ValueError("init_images: expected a PIL image or a non-empty list of PIL images")
        if not 0.0 <= float(denoising_strength) <= 1.0 or math.isnan(float(denoising_strength)):
            raise ValueError(f"denoising_strength={denoising_strength}; must be in [0, 1]")
        if inpainting_fill not in (0, 1, 2, 3):
            raise ValueError(f"inpainting_fill={inpainting_fill}; valid: 0 fill, 1 original, 2 latent noise, "
                             "3 latent nothing")
        if not 0 <= float(mask_blur) <= 64:
            raise ValueError(f"mask_blur={mask_blur}; must be in [0, 64] pixels")
        if not 0 <= int(inpaint_full_res_padding) <= 256:
            raise ValueError(f"inpaint_full_res_padding={inpaint_full_res_padding}; must be in [0, 256] pixels")
        width = self.info.default_size if width is None else int(width)
        height = self.info.default_size if height is None else int(height)
        _check_size(width, height)
        if mask is not None:
            if not isinstance(mask, Image.Image):
                raise ValueError("mask: expected a PIL image (white = repaint)")
            if mask.size != inits[0].size:
                raise ValueError(f"mask: size {mask.size[0]}x{mask.size[1]} does not match the init image's "
                                 f"{inits[0].size[0]}x{inits[0].size[1]}")
        region, overlay_mask, extra = None, None, {}
        if mask is not None:
            extra["Mask blur"] = _num(mask_blur)
            m = mask.convert("L")
            if inpainting_mask_invert:
                m = Image.eval(m, lambda v: 255 - v)
            if inpaint_full_res:  # A1111 blurs at full size, then crops the blurred mask's region
                m = imgs.gaussian_blur_mask(m, mask_blur, mask_blur) if mask_blur > 0 else m
                region = imgs.masked_crop_region(m, int(inpaint_full_res_padding), width, height)
                if region is None:
                    raise ValueError("mask: empty (no pixel to repaint), so 'inpaint only masked' has no region")
                overlay_mask = m
                prepared_mask = imgs.resize_image(2, m.crop(region), width, height)
                extra.update({"Inpaint area": "Only masked", "Masked area padding": int(inpaint_full_res_padding)})
            else:
                m = imgs.resize_image(resize_mode, m, width, height)
                prepared_mask = imgs.gaussian_blur_mask(m, mask_blur, mask_blur) if mask_blur > 0 else m
        else:
            prepared_mask = None
        if region is not None:  # the init images at full size for pasting back, their crops for sampling
            pasted_on = [im.convert("RGB") for im in inits]
            resized = [imgs.resize_image(2, im.crop(region), width, height) for im in pasted_on]
        else:
            resized = [imgs.resize_image(resize_mode, im.convert("RGB"), width, height) for im in inits]
            pasted_on, overlay_mask = resized, prepared_mask
        fill = imgs.INPAINTING_FILL[inpainting_fill]

        def init_for(batch_size: int, it: int) -> _Init:
            # image j of the job uses init image j modulo their number (A1111 cycles through them)
            picks = [(it * batch_size + j) % len(resized) for j in range(batch_size)]
            to_encode, keep = [resized[k] for k in picks], None
            if prepared_mask is not None:
                if fill == "fill":
                    to_encode = [imgs.fill_masked(im, prepared_mask) for im in to_encode]
                k = imgs.latent_keep_mask(prepared_mask, width // 8, height // 8)
                keep = torch.from_numpy(k)[None, None].expand(batch_size, self.info.latent_channels, -1, -1)
            return _Init(self.encode(to_encode), float(denoising_strength), keep, fill, [pasted_on[k] for k in picks],
                         [overlay_mask] * batch_size if overlay_mask is not None else None, paste_region=region,
                         image_cond=self.image_conditioning(batch_size, width, height, to_encode, prepared_mask))

        return self._generate(
            prompt=prompt, negative_prompt=negative_prompt, steps=steps, sampler_name=sampler_name,
            scheduler=scheduler, cfg_scale=cfg_scale, width=width, height=height, seed=seed, batch_size=batch_size,
            n_iter=n_iter, clip_skip=clip_skip, eta=eta, s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax,
            s_noise=s_noise, subseed=subseed, subseed_strength=subseed_strength,
            eta_noise_seed_delta=eta_noise_seed_delta, callback=callback, should_stop=should_stop, init_for=init_for, loras=loras,
            should_skip=should_skip,
            extra_params=extra or None)

    def _generate(self, *, prompt, negative_prompt, steps, sampler_name, scheduler, cfg_scale, width, height, seed,
                  batch_size, n_iter, clip_skip, eta, s_churn, s_tmin, s_tmax, s_noise, subseed, subseed_strength,
                  eta_noise_seed_delta, callback, should_stop, init_for, loras=None, extra_params=None,
                  should_skip=None) -> Result:
        """`callback(info)` runs after every model call (info also holds "iteration" and "n_iter");
        `should_stop()` is asked before each one and, once true, ends the job: the current batch is
        decoded from its latest prediction and no further batches run (A1111's interrupt).
        `should_skip()` likewise ends only the current batch, decoded from its latest prediction,
        and the job goes on with the next (A1111's skip)."""
        width = self.info.default_size if width is None else int(width)
        height = self.info.default_size if height is None else int(height)
        _check_size(width, height)
        for name, value in (("steps", steps), ("batch_size", batch_size), ("n_iter", n_iter), ("clip_skip", clip_skip)):
            if int(value) < 1:
                raise ValueError(f"{name}={value}; must be >= 1")
        for name, value in (("cfg_scale", cfg_scale), ("eta", eta), ("s_churn", s_churn), ("s_noise", s_noise)):
            if value is not None and not math.isfinite(float(value)):
                raise ValueError(f"{name}={value}; must be a finite number")
        info, schedule = resolve_sampler(sampler_name, scheduler)
        prompts = _per_image(prompt, batch_size, "prompt")
        written_prompts = prompts  # the infotext keeps the <lora:...> tags, as A1111's does
        prompts, lora_tags = self.networks.strip_tags(prompts)
        negatives = _per_image(negative_prompt, batch_size, "negative_prompt")
        first_seed = resolve_seed(seed)
        if not 0.0 <= float(subseed_strength) <= 1.0:
            raise ValueError(f"subseed_strength={subseed_strength}; must be in [0, 1]")
        first_subseed = resolve_seed(subseed, "subseed") if subseed_strength else None
        steps = int(steps)
        model_denoiser = info.model_denoiser(self.denoiser)
        sigmas = sigmas_for(schedule, steps, model_denoiser, discard_next_to_last_sigma=info.discard_next_to_last_sigma,
                            timesteps=info.timesteps)
        given = {"eta": eta, "s_churn": s_churn, "s_tmin": s_tmin, "s_tmax": s_tmax, "s_noise": s_noise}
        # eta None: the sampler's own default (A1111: eta_ancestral 1 for ancestral/SDE, eta_ddim 0 for DDIM)
        sampler_options = {k: float(given[k]) for k in info.options if given[k] is not None}
        shape = (self.info.latent_channels, height // 8, width // 8)

        applied = None
        try:
            applied, lora_params = self.networks.activate(lora_tags, loras)
            extra_params = {**(extra_params or {}), **lora_params}
            used_embeddings: set[str] = set()
            # A1111's SD2 always takes OpenCLIP's penultimate layer (the last of diffusers' 23) and ignores
            # clip skip, though the infotext still records it
            opts = ConditioningOptions(clip_skip=1 if self.info.family == "sd2" else clip_skip,
                                       find_embedding=_recording(self.find_embedding, used_embeddings),
                                       **({"pad_id": 0} if self.info.family == "sd2" else {}))
            batch_cond = conditioning_for_batch(prompts, negatives, steps, self.tokenizer, self.backend.encode_text, opts)
            extra_params = {**(extra_params or {}), **self._ti_hashes(used_embeddings)}
            images, seeds, infotexts, all_prompts = [], [], [], []
            interrupted = False
            txt2img_image_cond = None  # an inpainting UNet's "everything masked" input, the same for every batch
            for it in range(int(n_iter)):
                if interrupted:
                    break
                batch_seeds = [first_seed + it * batch_size + i for i in range(batch_size)]
                batch_subseeds = None if first_subseed is None else [
                    first_subseed + it * batch_size + i for i in range(batch_size)]
                rng = ImageRNG(shape, batch_seeds, subseeds=batch_subseeds, subseed_strength=subseed_strength,
                               eta_noise_seed_delta=eta_noise_seed_delta)
                noise = rng.first()
                init = init_for(batch_size, it) if init_for is not None else None
                if init is None and info.timesteps is not None:  # pure noise in VP space: x_vp = noise, x = x_vp / sqrt(alpha_bar)
                    run_sigmas, x = sigmas, noise * math.sqrt(1 + float(sigmas[0]) ** 2)
                elif init is None:
                    run_sigmas, x = sigmas, noise * float(sigmas[0])
                else:
                    run_sigmas, x = self._img2img_start(init, noise, sigmas, steps, info, model_denoiser)
                if init is not None:
                    image_cond = init.image_cond
                else:
                    if txt2img_image_cond is None:
                        txt2img_image_cond = self.image_conditioning(batch_size, width, height)
                    image_cond = txt2img_image_cond
                denoiser = CFGDenoiser(model_denoiser, batch_cond, cfg_scale, image_cond=image_cond,
                                       init_latent=init.latents if init is not None and init.keep is not None else None,
                                       keep_mask=init.keep if init is not None else None, should_stop=should_stop,
                                       should_skip=should_skip,
                                       batch_invariant=self.batch_invariant)
                if info.brownian_noise:
                    sampler_options["noise_sampler"] = BrownianTreeNoise(x, sigmas, batch_seeds)
                try:
                    step_callback = None if callback is None else (
                        lambda d, it=it: callback({**d, "iteration": it, "n_iter": int(n_iter)}))
                    latents = self._sampler(info, sampler_options)(denoiser, x, run_sigmas, callback=step_callback,
                                                                   noise=rng.next, **sampler_options)
                    if info.timesteps is not None:  # A1111 decodes the timestep samplers' VP-space result as it is
                        latents = latents / math.sqrt(1 + float(run_sigmas[-1]) ** 2)
                except Interrupted as stop:
                    interrupted = not isinstance(stop, Skipped)
                    latents = denoiser.last_denoised if denoiser.last_denoised is not None else x
                if init is not None and init.keep is not None:
                    latents = torch.lerp(init.latents, latents, 1 - init.keep)  # keep the unmasked latents exactly
                decoded = self.decode(latents)
                if init is not None and init.paste_region is not None:
                    decoded = [imgs.paste_into_region(d, o, init.paste_region, m)
                               for d, o, m in zip(decoded, init.originals, init.overlay_masks)]
                elif init is not None and init.overlay_masks is not None:
                    decoded = [imgs.paste_over_original(d, o, m) for d, o, m in zip(decoded, init.originals,
                                                                                     init.overlay_masks)]
                images += decoded
                for j, (p, n, s) in enumerate(zip(written_prompts, negatives, batch_seeds)):
                    params = {"Steps": steps, "Sampler": info.name, "Schedule type": schedule_label(sampler_name, scheduler),
                              "CFG scale": _num(cfg_scale), "Seed": s, "Size": f"{width}x{height}",
                              "Model hash": self.info.hash, "Model": self.info.name,
                              "VAE hash": self.info.vae_hash, "VAE": self.info.vae_name,
                              "Variation seed": batch_subseeds[j] if batch_subseeds else None,
                              "Variation seed strength": _num(subseed_strength) if batch_subseeds else None,
                              "Denoising strength": _num(init.strength) if init is not None else None,
                              "Clip skip": clip_skip if clip_skip > 1 else None,
                              "ENSD": int(eta_noise_seed_delta) if eta_noise_seed_delta else None,
                              "RNG": "CPU",  # A1111's default is GPU; CPU is what reproduces across machines
                              **_eta_param(info, eta),
                              **(extra_params or {}),
                              "Version": f"sdrt {__version__}"}
                    infotexts.append(create_infotext(p, n, params))
                seeds += batch_seeds
                all_prompts += written_prompts
            return Result(images, seeds, infotexts, all_prompts, interrupted)
        finally:
            if applied is not None:
                applied.remove()  # the base weights, bit for bit

    def _ti_hashes(self, names: set[str]) -> dict:
        """A1111's "TI hashes": each embedding used (prompt or negative) with its file's short sha256."""
        if not names or self.embeddings is None:
            return {}
        from ..loaders.hashes import sha256

        found = [(n, self.embeddings.embeddings[n].path) for n in sorted(names) if n in self.embeddings.embeddings]
        return {"TI hashes": ", ".join(f"{n}: {sha256(p)[:12]}" for n, p in found if p)} if found else {}

    def _sampler(self, info, options: dict):
        """The sampler function to run: the C++ loop where asked for and it covers this sampler
        (it has no churn), else the Python reference."""
        if self.sampler_loop not in SAMPLER_LOOPS:
            raise ValueError(f"sampler_loop={self.sampler_loop!r}; valid: {', '.join(SAMPLER_LOOPS)}")
        from ..sampling.native import NATIVE_METHODS, sample_native

        if self.sampler_loop == "cpp" and info.name in NATIVE_METHODS and not options.get("s_churn"):
            def native(denoiser, x, sigmas, *, callback, noise, s_tmin=None, s_tmax=None, s_churn=None, **rest):
                return sample_native(info.name, denoiser, x, sigmas, callback=callback, noise=noise, **rest)
            return native
        return info.function

    @staticmethod
    def _img2img_start(init: _Init, noise: torch.Tensor, sigmas: torch.Tensor, steps: int, info, denoiser):
        """A1111 sample_img2img: the init latent plus noise at the schedule's img2img start (see
        sampling.img2img_sigmas). Inpainting fills 2/3 replace the masked latents first."""
        latents = init.latents
        if init.keep is not None and init.fill == "latent noise":
            latents = latents * init.keep + noise * (1 - init.keep)
        elif init.keep is not None and init.fill == "latent nothing":
            latents = latents * init.keep
        init.latents = latents
        run, sigma_noise = img2img_sigmas(info, sigmas, steps, init.strength, denoiser)
        x = latents + noise * sigma_noise
        if info.timesteps is not None:  # noised in VP space at sigma_noise, seen from the first run sigma
            x = x * math.sqrt((1 + float(run[0]) ** 2) / (1 + sigma_noise**2))
        return run, x


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


def _check_size(width: int, height: int) -> None:
    for name, value in (("width", width), ("height", height)):
        if value < 8 or value % 8:
            raise ValueError(f"{name}={value}; must be a positive multiple of 8")


def _num(v: float):
    return int(v) if float(v).is_integer() else float(v)


def _per_image(value: str | Sequence[str], batch_size: int, name: str) -> list[str]:
    values = [value] * batch_size if isinstance(value, str) else list(value)
    if len(values) != batch_size or not all(isinstance(v, str) for v in values):
        raise ValueError(f"{name}: expected a string or a list of {batch_size} strings (one per image)")
    for v in values:
        if len(v) > MAX_PROMPT_CHARS:
            raise ValueError(f"{name}: {len(v)} characters; at most {MAX_PROMPT_CHARS}")
    return values


def _eta_param(info, eta) -> dict:
    """A1111 writes eta only when it differs from the sampler's default: "Eta DDIM" (default 0) for
    its timestep samplers, "Eta" (default 1) for the k-diffusion ones."""
    if eta is None or "eta" not in info.options:
        return {}
    field, default = ("Eta DDIM", 0.0) if info.timesteps is not None else ("Eta", 1.0)
    return {} if float(eta) == default else {field: _num(eta)}
