"""A1111 model folders: defaults, listing, name resolution and refusal of escaping names."""
from __future__ import annotations

import os

import pytest

from sdrt.loaders.model_folders import (
    KINDS,
    ModelEntry,
    ModelFolders,
    UnknownModelError,
    UnsafeModelNameError,
)


def _touch(path, data: bytes = b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def tree(tmp_path):
    """A root in A1111's layout with files of every kind, subfolders and decoys."""
    root = tmp_path / "webui"
    m = root / "models"
    for rel in ["v1-5.safetensors", "sub/dreamshaper_8.safetensors", "old.ckpt", "notes.txt", "x.pt"]:
        _touch(m / "Stable-diffusion" / rel)
    for rel in ["detail.safetensors", "style/detail.safetensors", "style/anime2.pt", "style/anime10.ckpt",
                "Upper.SAFETENSORS", "readme.md", "preview.png"]:
        _touch(m / "Lora" / rel)
    for rel in ["vae-ft-mse.safetensors", "kl-f8.vae.pt", "orange.ckpt", "x.bin"]:
        _touch(m / "VAE" / rel)
    for rel in ["bad-hands.pt", "easyneg.safetensors", "sub/old.bin", "img.png", "img.webp"]:
        _touch(m / "embeddings" / rel)
    return root


def _titles(folders: ModelFolders, kind: str) -> list[str]:
    return [e.title for e in folders.list(kind)]


# ---- folders ------------------------------------------------------------------------------------


def test_default_folders_follow_a1111_layout(tree):
    f = ModelFolders(tree)
    assert f.folder("checkpoints") == str(tree / "models" / "Stable-diffusion")
    assert f.folder("lora") == str(tree / "models" / "Lora")
    assert f.folder("vae") == str(tree / "models" / "VAE")
    assert f.folder("embeddings") == str(tree / "models" / "embeddings")


def test_root_from_env_var_then_cwd(tree, tmp_path, monkeypatch):
    monkeypatch.setenv("SDRT_MODELS_ROOT", str(tree))
    assert ModelFolders().folder("lora") == str(tree / "models" / "Lora")
    monkeypatch.delenv("SDRT_MODELS_ROOT")
    monkeypatch.chdir(tmp_path)
    assert ModelFolders().folder("lora") == str(tmp_path / "models" / "Lora")


def test_overrides_like_a1111_dir_flags(tree, tmp_path):
    elsewhere = tmp_path / "my-loras"
    _touch(elsewhere / "mine.safetensors")
    f = ModelFolders(tree, lora=elsewhere)
    assert f.folder("lora") == str(elsewhere)
    assert _titles(f, "lora") == ["mine.safetensors"]
    assert f.folder("vae") == str(tree / "models" / "VAE")  # the others keep their defaults


def test_unknown_kind_is_refused(tree):
    with pytest.raises(ValueError, match="unknown model kind"):
        ModelFolders(tree).list("hypernetworks")
    assert KINDS == ("checkpoints", "lora", "vae", "embeddings", "esrgan", "realesrgan", "controlnet", "annotators")


def test_missing_folder_lists_nothing(tmp_path):
    assert ModelFolders(tmp_path).list("lora") == []


# ---- listing ------------------------------------------------------------------------------------


def test_listing_per_kind_extensions_subfolders_and_order(tree):
    f = ModelFolders(tree)
    assert _titles(f, "checkpoints") == ["old.ckpt", "sub/dreamshaper_8.safetensors", "v1-5.safetensors"]
    # natural order (anime2 before anime10), case-insensitive extensions
    assert _titles(f, "lora") == ["detail.safetensors", "style/anime2.pt", "style/anime10.ckpt",
                                  "style/detail.safetensors", "Upper.SAFETENSORS"]
    assert _titles(f, "vae") == ["kl-f8.vae.pt", "orange.ckpt", "vae-ft-mse.safetensors"]
    # .png/.webp embeddings are not supported yet
    assert _titles(f, "embeddings") == ["bad-hands.pt", "easyneg.safetensors", "sub/old.bin"]


def test_entry_fields(tree):
    path = tree / "models" / "Lora" / "style" / "anime2.pt"
    path.write_bytes(b"12345")
    entry = next(e for e in ModelFolders(tree).list("lora") if e.title == "style/anime2.pt")
    st = os.stat(path)
    assert entry == ModelEntry(name="anime2", title="style/anime2.pt", path=str(path), size=5, mtime=st.st_mtime)
    assert os.path.isabs(entry.path)


# ---- resolve ------------------------------------------------------------------------------------


def test_resolve_by_short_name_relative_path_and_extension(tree):
    f = ModelFolders(tree)
    lora = tree / "models" / "Lora"
    assert f.resolve("lora", "anime10") == str(lora / "style" / "anime10.ckpt")
    assert f.resolve("lora", "style/anime10") == str(lora / "style" / "anime10.ckpt")
    assert f.resolve("lora", "style/anime10.ckpt") == str(lora / "style" / "anime10.ckpt")
    assert f.resolve("lora", "style\\anime10") == str(lora / "style" / "anime10.ckpt")  # Windows-style
    assert f.resolve("lora", "./style//anime10") == str(lora / "style" / "anime10.ckpt")
    assert f.resolve("lora", "Upper") == str(lora / "Upper.SAFETENSORS")
    assert f.resolve("checkpoints", "sub/dreamshaper_8.safetensors") == str(
        tree / "models" / "Stable-diffusion" / "sub" / "dreamshaper_8.safetensors")
    assert f.resolve("vae", "kl-f8.vae") == str(tree / "models" / "VAE" / "kl-f8.vae.pt")
    assert f.resolve("embeddings", "old") == str(tree / "models" / "embeddings" / "sub" / "old.bin")


def test_resolve_accepts_an_a1111_checkpoint_title_with_hash(tree):
    want = str(tree / "models" / "Stable-diffusion" / "v1-5.safetensors")
    assert ModelFolders(tree).resolve("checkpoints", "v1-5.safetensors [6ce0161689]") == want


def test_ambiguous_short_name_picks_the_first_in_sorted_order(tree):
    f = ModelFolders(tree)
    lora = tree / "models" / "Lora"
    assert f.resolve("lora", "detail") == str(lora / "detail.safetensors")
    assert f.resolve("lora", "style/detail") == str(lora / "style" / "detail.safetensors")
    _touch(lora / "a" / "anime2.safetensors")  # "a/..." sorts before "style/..."
    assert f.resolve("lora", "anime2") == str(lora / "a" / "anime2.safetensors")


def test_resolve_only_returns_listed_file_types(tree):
    f = ModelFolders(tree)
    with pytest.raises(UnknownModelError):
        f.resolve("lora", "readme")
    with pytest.raises(UnknownModelError):
        f.resolve("checkpoints", "x")  # x.pt is not a checkpoint type
    with pytest.raises(UnknownModelError):
        f.resolve("lora", "style")  # a folder, not a file


@pytest.mark.parametrize(
    "name",
    ["../x", "sub/../../x", "style/../detail", "..", "..\\..\\x", "/etc/passwd", "\\\\server\\share\\x",
     "C:\\x", "c:x", "detail\x00.safetensors", "", "   ", ".", "./"],
)
def test_escaping_or_malformed_names_are_refused(tree, name):
    with pytest.raises(UnsafeModelNameError) as exc:
        ModelFolders(tree).resolve("lora", name)
    assert isinstance(exc.value, ValueError)
    assert "lora" in str(exc.value)


def test_refusal_message_names_kind_and_name(tree):
    with pytest.raises(ValueError, match=r"refusing lora name '\.\./\.\./x'"):
        ModelFolders(tree).resolve("lora", "../../x")


def test_symlink_out_of_the_folder_is_refused_and_not_listed(tree, tmp_path):
    outside = _touch(tmp_path / "secret" / "stolen.safetensors")
    lora = tree / "models" / "Lora"
    (lora / "evil.safetensors").symlink_to(outside)
    (lora / "linked").symlink_to(outside.parent, target_is_directory=True)
    f = ModelFolders(tree)
    assert "evil.safetensors" not in _titles(f, "lora")
    assert not any(t.startswith("linked/") for t in _titles(f, "lora"))
    for name in ["evil", "evil.safetensors", "linked/stolen", "linked/stolen.safetensors", "linked/nothing"]:
        with pytest.raises(UnsafeModelNameError, match="outside"):
            f.resolve("lora", name)


def test_symlink_inside_the_folder_is_allowed(tree):
    lora = tree / "models" / "Lora"
    (lora / "alias.safetensors").symlink_to(lora / "style" / "detail.safetensors")
    f = ModelFolders(tree)
    assert "alias.safetensors" in _titles(f, "lora")
    assert f.resolve("lora", "alias") == str(lora / "alias.safetensors")


def test_symlinked_model_folder_itself_is_fine(tree, tmp_path):
    link = tmp_path / "lora-link"
    link.symlink_to(tree / "models" / "Lora", target_is_directory=True)
    f = ModelFolders(tree, lora=link)
    assert f.resolve("lora", "anime2") == str(link / "style" / "anime2.pt")


def test_unknown_name_lists_close_matches(tree):
    with pytest.raises(UnknownModelError) as exc:
        ModelFolders(tree).resolve("lora", "anime")
    err = exc.value
    assert isinstance(err, ValueError)
    assert {"anime2", "anime10"} <= set(err.suggestions)
    assert "anime2" in str(err) and "lora" in str(err) and "'anime'" in str(err)


def test_suggestions_are_capped_at_ten(tmp_path):
    for i in range(30):
        _touch(tmp_path / "models" / "Lora" / f"style{i}.safetensors")
    with pytest.raises(UnknownModelError) as exc:
        ModelFolders(tmp_path).resolve("lora", "style")
    assert len(exc.value.suggestions) == 10


def test_unknown_name_in_empty_folder_has_no_suggestions(tmp_path):
    with pytest.raises(UnknownModelError) as exc:
        ModelFolders(tmp_path).resolve("vae", "anything")
    assert exc.value.suggestions == []
