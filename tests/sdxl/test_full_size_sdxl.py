"""A full-size SDXL base layout (random weights, 3.5B parameters, an fp16 single file as model sites
ship it): shapes checked on meta tensors before any weight is read, then loaded by sdrt.load and
run for one guided UNet step at a reduced latent size, with peak memory measured in a fresh
process. Slow (several minutes, ~20 GB of memory at peak): `pytest -m slow`."""
import json
import subprocess
import sys

import pytest
import torch

LOAD_AND_STEP = r"""
import json, resource, sys, torch
import sdrt
pipe = sdrt.load(sys.argv[1])
params = sum(p.numel() for m in (pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2) for p in m.parameters())
result = pipe.txt2img("a photo of a cat", steps=1, width=256, height=256, seed=1, sampler_name="Euler")
print(json.dumps({"family": pipe.info.family, "added_time_ids": pipe.info.added_time_ids, "params": params,
                  "size": list(result.images[0].size), "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "infotext": result.infotexts[0]}))
"""


def write_random_sdxl_file(path: str) -> int:
    """A random fp16 SDXL base checkpoint in the original layout; returns its parameter count."""
    from safetensors.torch import save_file

    from sdrt.loaders import ldm_layout
    from sdrt.loaders.single_file import read_shapes
    from sdrt.models.architectures import ARCHITECTURES, detect_architecture

    arch = ARCHITECTURES["sdxl"]
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with torch.device("meta"):
        unet, vae = UNet2DConditionModel(**arch.unet), AutoencoderKL(**arch.vae)
        te1 = CLIPTextModel(CLIPTextConfig(**arch.text_encoders["text_encoder"]))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**arch.text_encoders["text_encoder_2"]))
    shapes = {**ldm_layout.unet_to_ldm(unet.state_dict(), unet.config), **ldm_layout.vae_to_ldm(vae.state_dict(), vae.config),
              **ldm_layout.clip_to_ldm(te1.state_dict(), ldm_layout.SDXL_CLIP_PREFIX),
              **ldm_layout.open_clip_to_ldm(te2.state_dict(), ldm_layout.SDXL_OPEN_CLIP_PREFIX)}
    assert detect_architecture({k: tuple(v.shape) for k, v in shapes.items()}).name == "sdxl"  # meta: no memory
    g = torch.Generator().manual_seed(0)
    state = {k: (torch.randn(tuple(v.shape), generator=g) * 0.02).to(torch.float16) for k, v in shapes.items()}
    save_file(state, path)
    assert detect_architecture(*read_shapes(path), source=path).name == "sdxl"  # from the header alone
    return sum(v.numel() for v in state.values())


@pytest.mark.slow
def test_full_size_sdxl_single_file_loads_and_steps_within_memory(tmp_path):
    path = str(tmp_path / "sdxl_random.safetensors")
    write_random_sdxl_file(path)
    out = subprocess.run([sys.executable, "-c", LOAD_AND_STEP, path], capture_output=True, text=True, timeout=3600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["family"] == "sdxl" and report["added_time_ids"] == 6 and report["size"] == [256, 256]
    fp32_bytes = report["params"] * 4
    print(f"SDXL: {report['params'] / 1e9:.2f}B parameters, peak RSS {report['peak_rss'] / 2**30:.1f} GiB "
          f"= {report['peak_rss'] / fp32_bytes:.2f}x the fp32 parameter bytes")
    assert report["peak_rss"] <= 1.6 * fp32_bytes
