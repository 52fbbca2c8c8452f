"""SDXL's VAE: its own scaling factor, A1111's NaN check (a half-precision decode that is not finite
runs again in fp32, and the VAE stays fp32), and a VAE file given as vae= (the fp16-fix VAE's case)."""
import numpy as np
import torch

import sdrt
from sdrt.loaders import ldm_layout


def test_scaling_factor_is_the_models(tiny_sdxl):
    assert sdrt.load(tiny_sdxl[0]).info.scaling_factor == 0.13025


def test_non_finite_half_precision_decode_is_redone_in_fp32(tiny_sdxl):
    pipe16 = sdrt.load(tiny_sdxl[0], dtype=torch.float16)
    pipe32 = sdrt.load(tiny_sdxl[0])
    for pipe in (pipe16, pipe32):  # activations past fp16's range (65504) after the first convolution
        with torch.no_grad():
            pipe.vae.post_quant_conv.weight.mul_(3e4)
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 20
    with torch.no_grad():
        direct = pipe16.vae.decode(latents.to(torch.float16)).sample
    assert not torch.isfinite(direct).all()  # what A1111's check catches
    got = pipe16.backend.vae_decode(latents)
    assert torch.isfinite(got).all() and pipe16.backend.vae_dtype == torch.float32
    assert pipe16.vae.dtype == torch.float32 and pipe16.unet.dtype == torch.float16  # only the VAE is upcast
    torch.testing.assert_close(got, pipe32.backend.vae_decode(latents), rtol=0, atol=2e-2)  # fp16-rounded weights


def test_a_vae_file_replaces_the_models(tiny_sdxl, tmp_path):
    from safetensors.torch import save_file

    base = sdrt.load(tiny_sdxl[0])
    torch.manual_seed(9)
    other = type(base.vae)(**{k: v for k, v in base.vae.config.items() if not k.startswith("_")})
    path = str(tmp_path / "sdxl_vae_fix.safetensors")
    save_file({k[len(ldm_layout.VAE_PREFIX):]: v.contiguous()
               for k, v in ldm_layout.vae_to_ldm(other.state_dict(), other.config).items()}, path)
    pipe = sdrt.load(tiny_sdxl[0], vae=path)
    for a, b in zip(pipe.vae.parameters(), other.parameters()):
        assert torch.equal(a, b)
    plain = base.txt2img("a cat", seed=2, steps=4)
    swapped = pipe.txt2img("a cat", seed=2, steps=4)
    assert "VAE: sdxl_vae_fix.safetensors" in swapped.infotexts[0]
    assert np.abs(np.asarray(plain.images[0], dtype=float) - np.asarray(swapped.images[0], dtype=float)).max() > 8
