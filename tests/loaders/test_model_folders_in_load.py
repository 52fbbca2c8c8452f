"""sdrt.load with A1111's model folders: checkpoints and VAEs by name, embeddings picked up."""
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import sdrt
from sdrt.loaders.single_file import save_checkpoint
from sdrt.models.architectures import ARCHITECTURES


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("a1111")
    for sub in ("Stable-diffusion/sub", "Lora", "VAE", "embeddings"):
        (root / "models" / sub).mkdir(parents=True)
    pipe = sdrt.load("toy")
    save_checkpoint(str(root / "models/Stable-diffusion/sub/toy-single.safetensors"), ARCHITECTURES["toy"],
                    pipe.unet, pipe.vae, {"text_encoder": pipe.text_encoder})
    g = torch.Generator().manual_seed(3)
    save_file({"emb_params": torch.randn(2, 64, generator=g)}, str(root / "models/embeddings/toyemb.safetensors"))
    save_file({"emb_params": torch.randn(2, 768, generator=g)}, str(root / "models/embeddings/sd15emb.safetensors"))
    return root


def test_checkpoint_by_name_and_embeddings_from_the_folder(root):
    pipe = sdrt.load("toy-single", models_dir=str(root))
    assert pipe.info.name == "toy-single"
    assert pipe.embeddings.names() == ["toyemb"]
    assert any("sd15emb" in path and "768" in why for path, why in pipe.embeddings.skipped.items())
    with_emb = pipe.txt2img("a toyemb circle", seed=1, steps=4)
    from sdrt.loaders.hashes import sha256

    short = sha256(str(root / "models/embeddings/toyemb.safetensors"))[:12]
    assert f'TI hashes: "toyemb: {short}"' in with_emb.infotexts[0]  # A1111's field, quoted (it holds ':')
    assert "TI hashes" not in pipe.txt2img("a circle", seed=1, steps=2).infotexts[0]
    plain = sdrt.load("toy").txt2img("a toyemb circle", seed=1, steps=4)  # no embeddings: plain tokens
    assert not np.array_equal(np.asarray(with_emb.images[0]), np.asarray(plain.images[0]))


def test_names_resolve_only_inside_the_folders(root):
    with pytest.raises(ValueError, match="refusing"):
        sdrt.load("../secret/model", models_dir=str(root))  # (an existing path given by the caller is used as is)
    with pytest.raises(ValueError, match="toy-singel"):
        sdrt.load("toy-singel", models_dir=str(root))


def test_without_a_models_dir_nothing_is_picked_up(monkeypatch, tmp_path):
    monkeypatch.delenv("SDRT_MODELS_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "embeddings").mkdir(parents=True)
    save_file({"emb_params": torch.randn(1, 64)}, str(tmp_path / "models/embeddings/x.safetensors"))
    assert sdrt.load("toy").embeddings.names() == []
