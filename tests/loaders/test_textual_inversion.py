"""Textual-inversion embeddings: file formats, safe unpickling, the name lookup hook, and the
vectors reaching the toy model's text encoder."""
from __future__ import annotations

import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from sdrt.loaders.embeddings import Embedding, EmbeddingDatabase, load_embedding
from sdrt.prompt import get_tokenizer
from sdrt.prompt.chunking import tokenize_prompt


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    """Random, never-zero vectors (a zero tensor would hide a missed injection)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(*shape, generator=g)
    return t + torch.sign(t) * 0.1


def ids(text: str) -> list[int]:
    return get_tokenizer()([text], add_special_tokens=False)["input_ids"][0]


def sd1_db(*embeddings: Embedding, dim: int = 768) -> EmbeddingDatabase:
    db = EmbeddingDatabase(get_tokenizer(), "clip_l", dim)
    for e in embeddings:
        db.add(e)
    return db


# --- file formats -------------------------------------------------------------------------------

def test_a1111_pt(tmp_path):
    vec = rand(3, 768).requires_grad_()  # A1111 saves the trained leaf tensor as is
    path = tmp_path / "bad-hands-5.pt"
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vec}, "name": "other-name",
                "step": 1500, "sd_checkpoint": "abcdef12", "sd_checkpoint_name": "model"}, path)
    e = load_embedding(path)
    assert e.name == "bad-hands-5"  # the file stem, not the stored name (A1111)
    assert e.step == 1500 and e.path == str(path) and e.hash is None
    assert list(e.vectors) == ["clip_l"] and e.num_vectors == 3
    assert e.vectors["clip_l"].dtype == torch.float32 and not e.vectors["clip_l"].requires_grad
    torch.testing.assert_close(e.vectors["clip_l"], vec.detach())


def test_a1111_pt_numpy_step(tmp_path):
    np = pytest.importorskip("numpy")
    torch.save({"string_to_param": {"*": rand(1, 768)}, "step": np.int64(3000)}, tmp_path / "old.pt")
    assert load_embedding(tmp_path / "old.pt").step == 3000


def test_kohya_safetensors_fp16_and_sd2_width(tmp_path):
    vec = rand(2, 1024).half()
    save_file({"emb_params": vec}, tmp_path / "sd2thing.safetensors")
    e = load_embedding(tmp_path / "sd2thing.safetensors")
    assert e.name == "sd2thing" and e.step is None
    assert list(e.vectors) == ["clip_h"]  # 1024 wide: SD2's OpenCLIP ViT-H
    assert e.vectors["clip_h"].dtype == torch.float32
    torch.testing.assert_close(e.vectors["clip_h"], vec.float())


def test_sdxl_pair(tmp_path):
    l, g = rand(4, 768, seed=1), rand(4, 1280, seed=2)
    save_file({"clip_l": l, "clip_g": g}, tmp_path / "xl.safetensors")
    e = load_embedding(tmp_path / "xl.safetensors")
    assert set(e.vectors) == {"clip_l", "clip_g"} and e.num_vectors == 4
    torch.testing.assert_close(e.vectors["clip_g"], g)
    save_file({"clip_l": rand(4, 768), "clip_g": rand(3, 1280)}, tmp_path / "uneven.safetensors")
    with pytest.raises(ValueError, match="different vector counts"):
        load_embedding(tmp_path / "uneven.safetensors")


@pytest.mark.parametrize("suffix", [".bin", ".safetensors"])
def test_diffusers_concept_single_vector(tmp_path, suffix):
    vec = rand(768)  # learned_embeds: one 1-D vector under the placeholder token
    path = tmp_path / f"cat-toy{suffix}"
    if suffix == ".bin":
        torch.save({"<cat-toy>": vec}, path)
    else:
        save_file({"<cat-toy>": vec}, path)
    e = load_embedding(path)
    assert e.vectors["clip_l"].shape == (1, 768)
    torch.testing.assert_close(e.vectors["clip_l"][0], vec)


def test_bad_layouts_name_file_and_keys(tmp_path):
    save_file({"a": rand(1, 8), "b": rand(1, 8)}, tmp_path / "two.safetensors")
    with pytest.raises(ValueError, match=r"two\.safetensors.*'a', 'b'"):
        load_embedding(tmp_path / "two.safetensors")
    torch.save({"string_to_param": {"*": rand(1, 8), "x": rand(1, 8)}}, tmp_path / "multi.pt")
    with pytest.raises(ValueError, match=r"multi\.pt.*exactly one"):
        load_embedding(tmp_path / "multi.pt")
    torch.save([rand(1, 8)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="not a dict"):
        load_embedding(tmp_path / "list.pt")
    torch.save({"emb": torch.ones(2, 3, 4)}, tmp_path / "cube.pt")
    with pytest.raises(ValueError, match=r"shape \(2, 3, 4\)"):
        load_embedding(tmp_path / "cube.pt")
    torch.save({"emb": torch.ones(2, 3, dtype=torch.long)}, tmp_path / "ints.pt")
    with pytest.raises(ValueError, match="not float vectors"):
        load_embedding(tmp_path / "ints.pt")
    (tmp_path / "cut.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(ValueError, match=r"cut\.safetensors: not a readable safetensors file"):
        load_embedding(tmp_path / "cut.safetensors")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="not an embedding file"):
        load_embedding(tmp_path / "notes.txt")


class _Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("writer", ["pickle2", "pickle5", "torch.save"])
def test_malicious_pickle_is_refused(tmp_path, writer):
    marker = tmp_path / "pwned"
    payload = {"string_to_param": {"*": _Evil(str(marker))}}
    path = tmp_path / "evil.pt"
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=int(writer[-1])))
    # protocol 5 is refused at its first FRAME opcode, before the GLOBAL is even read
    why = "" if writer == "pickle5" else "system"
    with pytest.raises(ValueError, match=rf"evil\.pt: refused.*{why}") as info:
        load_embedding(path)
    assert "weights_only=False" not in str(info.value)  # never advise the unsafe retry
    assert not marker.exists()
    db = sd1_db()
    assert db.load_dir(tmp_path) == [] and "refused" in db.skipped[str(path)]
    assert not marker.exists()


# --- the database -------------------------------------------------------------------------------

def test_multi_token_name_and_longest_match():
    hands, bad = Embedding("bad-hands-5", {"clip_l": rand(5, 768)}), Embedding("bad", {"clip_l": rand(1, 768, seed=3)})
    db = sd1_db(bad, hands)
    assert db.names() == ["bad", "bad-hands-5"] and len(db) == 2
    tokens = ids("photo, bad-hands-5, bad hands")
    start = tokens.index(2103)
    name, vectors, consumed = db.find_embedding(tokens, start)
    assert (name, consumed) == ("bad-hands-5", 5) and vectors is hands.vectors["clip_l"]
    second = tokens.index(2103, start + 1)
    assert db.find_embedding(tokens, second)[::2] == ("bad", 1)
    assert db.find_embedding(tokens, 0) is None  # "photo"
    assert db.find_embedding(ids("bad-hands"), 0)[0] == "bad"  # the long name needs all its tokens
    assert db.find_embedding(ids("bad-hands-5"), 0)[0] == "bad-hands-5"


def test_unknown_names_and_case():
    db = sd1_db(Embedding("EasyNegative", {"clip_l": rand(8, 768)}))
    assert db.find_embedding(ids("easynegative"), 0)[0] == "EasyNegative"  # CLIP lowercases
    assert db.find_embedding(ids("easy"), 0) is None
    assert db.find_embedding(ids("negative"), 0) is None
    assert db.find_embedding(ids("a cat"), 1) is None


def test_wrong_width_and_family_are_skipped_with_reason():
    db = sd1_db(Embedding("sd2emb", {"clip_h": rand(1, 1024)}, path="/e/sd2emb.pt"),
                Embedding("narrow", {"clip_l": rand(1, 320)}, path="/e/narrow.pt"),
                Embedding("xl", {"clip_l": rand(1, 768), "clip_g": rand(1, 1280)}, path="/e/xl.safetensors"))
    assert db.names() == []
    assert "/e/narrow.pt" in db.skipped["/e/narrow.pt"]
    assert "320 wide" in db.skipped["/e/narrow.pt"] and "768 wide" in db.skipped["/e/narrow.pt"]
    assert "clip_h 1x1024" in db.skipped["/e/sd2emb.pt"]
    assert "another model family" in db.skipped["/e/xl.safetensors"]  # A1111 skips SDXL files on SD1
    assert db.find_embedding(ids("narrow"), 0) is None


def test_sdxl_databases_one_per_encoder():
    l, g = rand(2, 768, seed=4), rand(2, 1280, seed=5)
    xl = Embedding("xlemb", {"clip_l": l, "clip_g": g})
    sd1 = Embedding("sd1emb", {"clip_l": rand(2, 768)}, path="/e/sd1emb.pt")
    both = ("clip_l", "clip_g")
    db_l = EmbeddingDatabase(get_tokenizer(), "clip_l", 768, model_encoders=both)
    db_g = EmbeddingDatabase(get_tokenizer(), "clip_g", 1280, model_encoders=both)
    for db in (db_l, db_g):
        assert db.add(xl) and not db.add(sd1)
    assert db_l.find_embedding(ids("xlemb"), 0)[1] is l
    assert db_g.find_embedding(ids("xlemb"), 0)[1] is g
    with pytest.raises(ValueError, match="model_encoders"):
        EmbeddingDatabase(get_tokenizer(), "clip_h", 1024, model_encoders=both)


def test_load_dir_recursive_skips_bad_files(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    torch.save({"string_to_param": {"*": rand(2, 768)}}, tmp_path / "sub" / "deeper" / "bad-hands-5.pt")
    save_file({"emb_params": rand(8, 768)}, tmp_path / "easynegative.safetensors")
    torch.save({"<x>": rand(768)}, tmp_path / "sub" / "concept.BIN")
    save_file({"emb_params": rand(1, 1024)}, tmp_path / "sd2.safetensors")  # other family
    (tmp_path / "broken.safetensors").write_bytes(b"\x00\x01 not safetensors at all")
    (tmp_path / "empty.pt").write_bytes(b"")
    save_file({"a": rand(1, 768), "b": rand(1, 768)}, tmp_path / "odd.safetensors")
    (tmp_path / "readme.txt").write_text("not an embedding")
    (tmp_path / "easynegative.preview.png").write_bytes(b"png")

    db = sd1_db()
    added = db.load_dir(tmp_path)
    assert sorted(e.name for e in added) == db.names() == ["bad-hands-5", "concept", "easynegative"]
    skipped = {os.path.basename(k): v for k, v in db.skipped.items()}
    assert set(skipped) == {"sd2.safetensors", "broken.safetensors", "empty.pt", "odd.safetensors"}
    assert all(str(tmp_path) in reason for reason in db.skipped.values())
    assert "empty file" in skipped["empty.pt"] and "'a', 'b'" in skipped["odd.safetensors"]
    assert "1024" in skipped["sd2.safetensors"]
    assert db.find_embedding(ids("bad-hands-5"), 0)[1].shape == (2, 768)

    missing = sd1_db()
    assert missing.load_dir(tmp_path / "nope") == [] and "not a folder" in missing.skipped[str(tmp_path / "nope")]


def test_same_name_replaces_and_is_reported():
    first = Embedding("dup", {"clip_l": rand(1, 768)}, path="/a/dup.pt")
    second = Embedding("dup", {"clip_l": rand(2, 768)}, path="/b/dup.safetensors")
    db = sd1_db(first, second)
    assert db.find_embedding(ids("dup"), 0)[1] is second.vectors["clip_l"]
    assert "replaced by /b/dup.safetensors" in db.skipped["/a/dup.pt"]


def test_chunking_places_vectors_in_slots():
    """The hook as sdrt.prompt.chunking calls it: n vectors take n slots, whatever the name's length."""
    emb = Embedding("bad-hands-5", {"clip_l": rand(2, 768)})
    finder = sd1_db(emb).find_embedding
    chunks, count = tokenize_prompt("photo, (bad-hands-5:1.2)", get_tokenizer(), find_embedding=finder)
    (chunk,) = chunks
    (slot,) = chunk.embeddings
    assert count == len(ids("photo,")) + 2
    assert slot.name == "bad-hands-5" and slot.offset == 1 + len(ids("photo,")) and slot.vectors.shape == (2, 768)
    assert chunk.multipliers[slot.offset:slot.offset + 2] == [1.2, 1.2]


# --- end to end on the toy model ----------------------------------------------------------------

@pytest.fixture(scope="module")
def toy():
    import sdrt

    return sdrt.load("toy")


def test_toy_model_receives_the_vectors(toy, tmp_path):
    dim = toy.text_encoder.config.hidden_size
    vec = rand(2, dim, seed=7)
    save_file({"emb_params": vec}, tmp_path / "toyemb.safetensors")
    db = EmbeddingDatabase(toy.tokenizer, "clip_l", dim)
    assert [e.name for e in db.load_dir(tmp_path)] == ["toyemb"]

    # The token embedding + position embedding sum is the encoder's input; capture it.
    text_model = getattr(toy.text_encoder, "text_model", toy.text_encoder)
    seen: list[torch.Tensor] = []
    handle = text_model.embeddings.register_forward_hook(lambda m, i, out: seen.append(out.detach().clone()))
    toy.find_embedding = db.find_embedding
    try:
        with_emb = toy.txt2img("a toyemb circle", seed=1, steps=4)
        first_run = len(seen)
        toy.find_embedding = None
        without = toy.txt2img("a toyemb circle", seed=1, steps=4)
    finally:
        handle.remove()
        toy.find_embedding = None
    assert with_emb.images and with_emb.images[0].size == without.images[0].size

    positions = text_model.embeddings.position_embedding.weight[:77]
    token_part = [s - positions for s in seen]
    # first run: [BOS, "a", v0, v1, "circle", EOS...] somewhere in its batch
    slots = [row[2:4] for t in token_part[:first_run] for row in t]
    assert any(torch.allclose(s, vec, atol=1e-5) for s in slots)
    # without the hook the same prompt is plain tokens: nothing equals the vectors
    slots = [row[2:4] for t in token_part[first_run:] for row in t]
    assert not any(torch.allclose(s, vec, atol=1e-3) for s in slots)


def test_toy_conditioning_differs(toy):
    from sdrt.prompt.conditioning import ConditioningOptions, encode_texts

    dim = toy.text_encoder.config.hidden_size
    db = EmbeddingDatabase(toy.tokenizer, "clip_l", dim)
    db.add(Embedding("toyemb", {"clip_l": rand(2, dim, seed=8)}))
    opts = ConditioningOptions(find_embedding=db.find_embedding)
    z = encode_texts(["a toyemb circle", "a circle"], toy.tokenizer, toy.backend.encode_text, opts)
    plain = encode_texts(["a toyemb circle"], toy.tokenizer, toy.backend.encode_text, ConditioningOptions())
    assert z.shape == (2, 77, dim)
    assert not torch.allclose(z[0], z[1], atol=1e-4)
    assert not torch.allclose(z[0], plain[0], atol=1e-4)
