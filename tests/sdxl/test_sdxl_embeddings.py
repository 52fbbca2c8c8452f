"""SDXL textual inversion: an embedding file with clip_l / clip_g vectors, each encoder taking its
own, against diffusers' load_textual_inversion on both encoders; SD1 embeddings are skipped."""
import pytest
import torch
from diffusers import StableDiffusionXLPipeline
from safetensors.torch import save_file

import sdrt
from sdrt.pipelines import GenerationParams
from sdrt.pipelines.hooks import JobHooks
from sdrt.prompt.tokenizer import make_tokenizer

from tiny_sdxl import tokenizer_2


def test_sdxl_embedding_matches_diffusers_textual_inversion(tiny_sdxl, tmp_path):
    folder = tmp_path / "embeddings"
    folder.mkdir()
    g = torch.Generator().manual_seed(3)
    vectors = {"clip_l": torch.randn(2, 32, generator=g), "clip_g": torch.randn(2, 32, generator=g)}
    save_file(vectors, str(folder / "shinystyle.safetensors"))
    save_file({"emb_params": torch.randn(1, 768)}, str(folder / "sd15only.safetensors"))
    pipe = sdrt.load(tiny_sdxl[0], embeddings_dir=str(folder))
    assert pipe.embeddings.names() == ["shinystyle"] and "sd15only" in " ".join(pipe.embeddings.skipped)
    job = pipe.prepare(GenerationParams(prompt="a shinystyle cat", negative_prompt="fog").sized(64), JobHooks())
    cond = pipe.condition(job)[0].conds[0]
    assert job.infotext["TI hashes"].startswith("shinystyle: ")
    ref = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl[0], local_files_only=True, tokenizer=make_tokenizer(),
                                                    tokenizer_2=tokenizer_2())
    ref.load_textual_inversion(vectors["clip_l"], token="shinystyle", text_encoder=ref.text_encoder,
                               tokenizer=ref.tokenizer)
    ref.load_textual_inversion(vectors["clip_g"], token="shinystyle", text_encoder=ref.text_encoder_2,
                               tokenizer=ref.tokenizer_2)
    context, _, pooled, _ = ref.encode_prompt("a shinystyle cat", device="cpu", num_images_per_prompt=1,
                                              do_classifier_free_guidance=True, negative_prompt="fog")
    torch.testing.assert_close(cond.at(0), context[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(cond.pooled_at(0), pooled[0], rtol=0, atol=1e-5)
