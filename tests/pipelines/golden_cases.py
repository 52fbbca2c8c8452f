"""Generation cases whose outputs were recorded before the pipeline became stages (issue 14).

`python tests/pipelines/golden_cases.py --record` writes tests/pipelines/golden/ from the current
code; test_golden_images.py regenerates every case and compares pixels, seeds and infotexts byte
for byte. Torch runs on one thread for both, so the float reductions run in one order.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys

import numpy as np
from PIL import Image

GOLDEN_DIR = os.path.join(os.path.dirname(__file__), "golden")


def _scene(shape, colour, position, background="gray", size=64):
    from sdrt.toy import data

    spec = data.ShapeSpec(shape, colour, "large", position)
    return Image.fromarray(data.render(data.scene_from(spec, background))).resize((size, size))


def _mask(box, size=(64, 64)):
    m = Image.new("L", size, 0)
    m.paste(255, box)
    return m


def cases() -> dict[str, tuple[dict, str, dict]]:
    """name -> (load options, method, arguments)."""
    red = "a large red circle in the top left on a white background"
    blue = "a large blue square in the bottom right on a gray background"
    init = _scene("square", "red", "top left")
    wide = _scene("triangle", "green", "center").resize((96, 64))
    return {
        "txt2img_euler_a_batch": ({}, "txt2img", dict(prompt=red, seed=1, steps=8, cfg_scale=5, batch_size=2,
                                                     n_iter=2)),
        "txt2img_dpmpp_2m_sde": ({}, "txt2img", dict(prompt=blue, seed=2, steps=6, sampler_name="DPM++ 2M SDE",
                                                    batch_size=2)),
        "txt2img_ddim_eta": ({}, "txt2img", dict(prompt=red, seed=3, steps=6, sampler_name="DDIM", eta=0.5)),
        "txt2img_unipc": ({}, "txt2img", dict(prompt=blue, seed=4, steps=6, sampler_name="UniPC")),
        "txt2img_lcm": ({}, "txt2img", dict(prompt=red, seed=5, steps=4, sampler_name="LCM", cfg_scale=2)),
        "txt2img_heun_churn_variation": ({}, "txt2img", dict(
            prompt="a large [red:blue:0.5] circle in the top left AND a square :0.5", negative_prompt="green",
            seed=6, steps=5, sampler_name="Heun", s_churn=0.5, subseed=7, subseed_strength=0.3,
            eta_noise_seed_delta=31337, clip_skip=2, width=64, height=48)),
        "txt2img_dpm2_a_karras": ({}, "txt2img", dict(prompt=blue, seed=8, steps=5, sampler_name="DPM2 a Karras")),
        "txt2img_dpmpp_sde_prompts": ({}, "txt2img", dict(prompt=[red, blue], negative_prompt=["", "yellow"],
                                                         seed=9, steps=4, sampler_name="DPM++ SDE", batch_size=2)),
        "txt2img_whole_batch": ({"batch_invariant": False}, "txt2img", dict(prompt=[red, blue], seed=10, steps=5,
                                                                           batch_size=2)),
        "txt2img_cpp_loop": ({"sampler_loop": "cpp"}, "txt2img", dict(prompt=red, seed=11, steps=5,
                                                                       sampler_name="LMS")),
        "img2img_euler_crop": ({}, "img2img", dict(init_images=wide, prompt=blue, seed=12, steps=8,
                                                  sampler_name="Euler", denoising_strength=0.6, resize_mode=1)),
        "img2img_ddim_fill_resize": ({}, "img2img", dict(init_images=[wide, init], prompt=red, seed=13, steps=6,
                                                        sampler_name="DDIM", denoising_strength=0.5, resize_mode=2,
                                                        batch_size=2)),
        "inpaint_fill": ({}, "img2img", dict(init_images=init, mask=_mask((32, 32, 64, 64)), prompt=blue, seed=14,
                                            steps=6, inpainting_fill=0, denoising_strength=0.9)),
        "inpaint_latent_noise_invert": ({}, "img2img", dict(init_images=init, mask=_mask((0, 0, 40, 40)),
                                                           prompt=blue, seed=15, steps=6, inpainting_fill=2,
                                                           inpainting_mask_invert=True, mask_blur=2)),
        "inpaint_only_masked": ({}, "img2img", dict(init_images=init.resize((96, 96)),
                                                   mask=_mask((50, 50, 80, 80), (96, 96)), prompt=blue, seed=16,
                                                   steps=6, sampler_name="DPM++ 2M", inpaint_full_res=True,
                                                   inpaint_full_res_padding=8)),
        "inpaint_latent_nothing_unipc": ({}, "img2img", dict(init_images=init, mask=_mask((16, 16, 48, 48)),
                                                            prompt=red, seed=17, steps=6, sampler_name="UniPC",
                                                            inpainting_fill=3, denoising_strength=0.8)),
    }


def run_case(pipe, method: str, args: dict):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return getattr(pipe, method)(**args)
    finally:
        torch.set_num_threads(threads)


def digest(image: Image.Image) -> str:
    return hashlib.sha256(np.asarray(image.convert("RGB")).tobytes()).hexdigest()


def record() -> None:
    import sdrt

    os.makedirs(GOLDEN_DIR, exist_ok=True)
    summary = {}
    for name, (load_options, method, args) in cases().items():
        result = run_case(sdrt.load("toy", **load_options), method, args)
        for i, image in enumerate(result.images):
            image.save(os.path.join(GOLDEN_DIR, f"{name}-{i}.png"))
        summary[name] = {"seeds": result.seeds, "infotexts": result.infotexts,
                         "sha256": [digest(im) for im in result.images]}
    with open(os.path.join(GOLDEN_DIR, "expected.json"), "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)


if __name__ == "__main__" and "--record" in sys.argv:
    record()
