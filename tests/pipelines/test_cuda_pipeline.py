"""The pipelines on a CUDA device: same seeds give the same pictures as on the CPU (the noise is
drawn on the CPU), in fp32 closely and in fp16 as the scorer reads them."""
import numpy as np
import pytest
from PIL import Image

import sdrt
from sdrt.toy import data, scorer

pytestmark = pytest.mark.cuda

PROMPT = "a large blue circle in the top left on a white background"


@pytest.fixture(scope="module")
def cpu_pipe():
    return sdrt.load("toy")


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M Karras"])
def test_cuda_fp32_matches_cpu(cpu_pipe, sampler):
    import torch

    gpu = sdrt.load("toy", device="cuda", dtype=torch.float32)
    kw = dict(steps=12, sampler_name=sampler, cfg_scale=5, seed=7, batch_size=2)
    a = np.stack([np.asarray(i, dtype=np.int16) for i in cpu_pipe.txt2img(PROMPT, **kw).images])
    b = np.stack([np.asarray(i, dtype=np.int16) for i in gpu.txt2img(PROMPT, **kw).images])
    # Different kernels (cuDNN/TF32 convolutions) differ in the last bits; 12 steps amplify a little.
    assert np.abs(a - b).mean() < 2.0, np.abs(a - b).mean()


def test_cuda_fp16_img2img_and_inpaint_draw_the_prompt():
    gpu = sdrt.load("toy", device="cuda")
    spec = data.ShapeSpec("circle", "blue", "large", "top left")
    init = data.render(data.scene_from(data.ShapeSpec("square", "red", "large", "top left")))
    out = gpu.img2img([Image.fromarray(init)], PROMPT, denoising_strength=0.9, steps=20, cfg_scale=5, seed=3)
    assert scorer.check(np.asarray(out.images[0]), spec, "white")["colour"]
    txt = gpu.txt2img(PROMPT, steps=20, cfg_scale=5, seed=3, batch_size=4)
    checks = [scorer.check(np.asarray(im), spec, "white") for im in txt.images]
    assert sum(c["colour"] and c["position"] for c in checks) >= 3, checks
