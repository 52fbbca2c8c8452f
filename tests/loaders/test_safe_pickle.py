"""load_pickle: torch's restricted unpickler only, container checks on torch zips, the small extra
allow-list (numpy scalars, Lightning's ModelCheckpoint key), and refusal of malicious pickles in
every container, verified by the absence of their side effects."""
from __future__ import annotations

import importlib
import os
import pickle
import shlex
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from sdrt.loaders.safe_pickle import check_torch_zip, load_pickle
from sdrt.loaders.state_dict import ModelFileError, read_state_dict


def _nonzero(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) + 0.5) * torch.where(
        torch.rand(shape, generator=g) < 0.5, -1.0, 1.0
    )


class _Reduce:
    """Pickles as a call of ``func(*args)``: how every malicious pickle runs code."""

    def __init__(self, func, args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


# --------------------------------------------------------------------------------------------
# malicious payloads and the containers they hide in
# --------------------------------------------------------------------------------------------


def _payload(kind: str, marker: Path, tmp_path: Path, monkeypatch) -> tuple[object, str]:
    """An object whose unpickling creates ``marker``, and the global torch should refuse."""
    touch = f"open({str(marker)!r}, 'w').close()"
    if kind == "os.system":
        return _Reduce(os.system, (f"touch {shlex.quote(str(marker))}",)), f"{os.name}.system"
    if kind == "eval":
        return _Reduce(eval, (touch,)), "builtins.eval"
    if kind == "exec":
        return _Reduce(exec, (touch,)), "builtins.exec"
    if kind == "import_module":
        # Importing the module is the side effect.
        name = f"sdrt_pwn_{abs(hash(str(tmp_path)))}"
        (tmp_path / f"{name}.py").write_text(touch + "\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.delitem(sys.modules, name, raising=False)
        return _Reduce(importlib.import_module, (name,)), "importlib.import_module"
    raise AssertionError(kind)


def _torch_zip_members(path: Path) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(path) as zf:
        return [(info.filename, zf.read(info)) for info in zf.infolist()]


def _write_zip(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def _hide(container: str, evil: object, path: Path) -> Path:
    """Write ``evil`` into ``path`` in the given container format."""
    if container == "bare pickle":
        path.write_bytes(pickle.dumps(evil, protocol=2))
    elif container == "torch zip":
        torch.save({"weight": _nonzero(4), "evil": evil}, path)
    elif container == "legacy torch":
        legacy = {"weight": _nonzero(4), "evil": evil}
        torch.save(legacy, path, _use_new_zipfile_serialization=False)
    elif container == "handmade zip":
        # A genuine torch archive whose data.pkl was swapped for the malicious pickle.
        good = path.with_name("good_" + path.name)
        torch.save({"weight": _nonzero(4)}, good)
        evil_pkl = pickle.dumps(evil, protocol=2)
        members = [
            (name, evil_pkl if name.endswith("/data.pkl") else data)
            for name, data in _torch_zip_members(good)
        ]
        _write_zip(path, members)
    else:
        raise AssertionError(container)
    return path


PAYLOADS = ["os.system", "eval", "exec", "import_module"]
CONTAINERS = ["bare pickle", "torch zip", "legacy torch", "handmade zip"]


@pytest.mark.parametrize("kind", PAYLOADS)
def test_payloads_are_live(tmp_path: Path, monkeypatch, kind: str) -> None:
    """Control: unrestricted unpickling of the test payloads does run them, so the refusal tests
    below check something real."""
    marker = tmp_path / "pwned"
    evil, _ = _payload(kind, marker, tmp_path, monkeypatch)
    pickle.loads(pickle.dumps(evil, protocol=2))
    assert marker.exists()


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("kind", PAYLOADS)
def test_malicious_pickle_is_refused(
    tmp_path: Path, monkeypatch, kind: str, container: str
) -> None:
    marker = tmp_path / "pwned"
    evil, refused = _payload(kind, marker, tmp_path, monkeypatch)
    path = _hide(container, evil, tmp_path / "model.ckpt")

    for load in (load_pickle, read_state_dict):
        with pytest.raises(ModelFileError) as err:
            load(path)
        msg = str(err.value)
        assert str(path) in msg
        assert refused in msg
        assert "may contain code" in msg and "not loaded" in msg
    assert not marker.exists()


# --------------------------------------------------------------------------------------------
# container checks
# --------------------------------------------------------------------------------------------


def test_torch_213_archive_layout_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "weights.ckpt"
    torch.save({"a": _nonzero(3), "b": _nonzero(2, 2).half()}, path)
    names = [name for name, _ in _torch_zip_members(path)]
    # What torch.save writes today; a new record name would need adding to the allow-list.
    assert {n.split("/", 1)[1] for n in names} <= {
        "data.pkl", "version", "byteorder", ".format_version", ".storage_alignment",
        ".data/serialization_id", ".data/version", "data/0", "data/1",
    }
    assert check_torch_zip(path) == "weights"


def _good_members(tmp_path: Path) -> list[tuple[str, bytes]]:
    good = tmp_path / "good.ckpt"
    torch.save({"w": _nonzero(4)}, good)
    return _torch_zip_members(good)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ("good/code/__torch__/evil.py", "unexpected zip member"),
        ("good/evil.py", "unexpected zip member"),
        ("good/data/0.py", "unexpected zip member"),
        ("good/../evil.pkl", "unsafe zip member"),
        ("../evil.pkl", "unsafe zip member"),
        ("/etc/evil.pkl", "unsafe zip member"),
        ("good//data.pkl", "unsafe zip member"),
        ("data.pkl", "unexpected zip member"),
        ("other/data.pkl", "several top-level folders"),
    ],
)
def test_zip_with_foreign_member_is_refused(tmp_path: Path, extra: str, match: str) -> None:
    path = _write_zip(tmp_path / "model.ckpt", _good_members(tmp_path) + [(extra, b"print(1)\n")])
    for load in (load_pickle, read_state_dict):
        with pytest.raises(ModelFileError, match=match) as err:
            load(path)
        assert str(path) in str(err.value)
        if "several" not in match:
            assert repr(extra) in str(err.value)


def test_zip_without_data_pkl_is_refused(tmp_path: Path) -> None:
    members = [(n, d) for n, d in _good_members(tmp_path) if not n.endswith("/data.pkl")]
    path = _write_zip(tmp_path / "model.ckpt", members)
    with pytest.raises(ModelFileError, match="no good/data.pkl"):
        load_pickle(path)


def test_zip_with_duplicate_member_is_refused(tmp_path: Path) -> None:
    members = _good_members(tmp_path)
    pkl = next(m for m in members if m[0].endswith("/data.pkl"))
    with pytest.warns(UserWarning, match="Duplicate name"):
        path = _write_zip(tmp_path / "model.ckpt", members + [pkl])
    with pytest.raises(ModelFileError, match="appears twice"):
        load_pickle(path)


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.99])
def test_truncated_zip_is_refused(tmp_path: Path, keep: float) -> None:
    path = tmp_path / "cut.ckpt"
    torch.save({"w": _nonzero(256)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelFileError, match="truncated") as err:
        load_pickle(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(("content", "match"), [(b"", "empty"), (b"GGUF\0\0\0\3", "not a PyTorch")])
def test_not_a_torch_file(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=match) as err:
        load_pickle(path)
    assert str(path) in str(err.value)


def test_truncated_legacy_pickle(tmp_path: Path) -> None:
    path = tmp_path / "old.pt"
    torch.save({"w": _nonzero(256)}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError) as err:
        load_pickle(path)
    assert str(path) in str(err.value)


# --------------------------------------------------------------------------------------------
# how torch.load is called
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True])
def test_always_weights_only_and_mmap_for_zips(tmp_path: Path, monkeypatch, legacy: bool) -> None:
    path = tmp_path / "w.pt"
    weights = {"w": _nonzero(3)}
    torch.save(weights, path, _use_new_zipfile_serialization=not legacy)
    calls: list[dict] = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    got = load_pickle(path)
    assert torch.equal(got["w"], weights["w"])
    assert len(calls) == 1
    assert calls[0]["weights_only"] is True and calls[0]["map_location"] == "cpu"
    assert calls[0]["mmap"] is (not legacy)


def test_refused_file_is_not_retried_unrestricted(tmp_path: Path, monkeypatch) -> None:
    marker = tmp_path / "pwned"
    evil, _ = _payload("eval", marker, tmp_path, monkeypatch)
    path = _hide("torch zip", evil, tmp_path / "m.ckpt")
    calls: list[dict] = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    with pytest.raises(ModelFileError):
        load_pickle(path)
    assert [c["weights_only"] for c in calls] == [True]
    assert not marker.exists()


def test_safe_globals_are_restored(tmp_path: Path, monkeypatch) -> None:
    before = set(map(repr, torch.serialization.get_safe_globals()))
    path = tmp_path / "ti.pt"
    torch.save({"step": np.int64(3)}, path)
    load_pickle(path)
    evil, _ = _payload("eval", tmp_path / "pwned", tmp_path, monkeypatch)
    with pytest.raises(ModelFileError):
        load_pickle(_hide("torch zip", evil, tmp_path / "evil.ckpt"))
    assert set(map(repr, torch.serialization.get_safe_globals())) == before


# --------------------------------------------------------------------------------------------
# real-world pickles that must load
# --------------------------------------------------------------------------------------------


def _a1111_embedding(step: object) -> dict:
    return {
        "string_to_token": {"*": 265},
        "string_to_param": {"*": torch.nn.Parameter(_nonzero(2, 768, seed=1))},
        "name": "my-style",
        "step": step,
        "sd_checkpoint": "7460a6fa",
        "sd_checkpoint_name": "v1-5-pruned-emaonly",
    }


@pytest.mark.parametrize("legacy", [False, True])
def test_textual_inversion_embedding_loads(tmp_path: Path, legacy: bool) -> None:
    emb = _a1111_embedding(1234)
    path = tmp_path / "my-style.pt"
    torch.save(emb, path, _use_new_zipfile_serialization=not legacy)
    got = load_pickle(path)
    assert {k: v for k, v in got.items() if k != "string_to_param"} == {
        k: v for k, v in emb.items() if k != "string_to_param"
    }
    param = got["string_to_param"]["*"]
    assert isinstance(param, torch.nn.Parameter)  # torch._utils._rebuild_parameter: default-allowed
    assert torch.equal(param, emb["string_to_param"]["*"])


@pytest.mark.parametrize("legacy", [False, True])
def test_numpy_scalars_load(tmp_path: Path, legacy: bool) -> None:
    emb = _a1111_embedding(np.int64(1234))
    emb.update(loss=np.float32(0.125), lr=np.float64(5e-3), flag=np.bool_(True), n=np.uint8(7))
    path = tmp_path / "np.pt"
    torch.save(emb, path, _use_new_zipfile_serialization=not legacy)
    got = load_pickle(path)
    for key in ("step", "loss", "lr", "flag", "n"):
        assert type(got[key]) is type(emb[key]) and got[key] == emb[key], key


def test_numpy1_scalar_names_load(tmp_path: Path) -> None:
    """Files written under numpy 1.x name the reconstructor numpy.core.multiarray.scalar."""
    path = tmp_path / "np1.pt"
    torch.save({"step": np.int64(99)}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    assert b"numpy._core.multiarray" in data
    path.write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert load_pickle(path)["step"] == 99


@pytest.mark.parametrize(
    ("evil", "refused"),
    [
        (_Reduce(np.dtype, ("O", False, True)), "numpy dtype 'O' is not allowed"),
        (np.arange(3), "numpy._core.multiarray._reconstruct"),  # arrays stay refused
    ],
)
def test_numpy_beyond_plain_scalars_is_refused(tmp_path: Path, evil: object, refused: str) -> None:
    path = tmp_path / "np.pt"
    torch.save({"x": evil}, path)
    with pytest.raises(ModelFileError, match="may contain code") as err:
        load_pickle(path)
    assert refused in str(err.value)


def test_lightning_checkpoint_with_callbacks_loads(tmp_path: Path, monkeypatch) -> None:
    """Original SD 1.x checkpoints key their callback state by Lightning's ModelCheckpoint class."""
    names = [
        "pytorch_lightning",
        "pytorch_lightning.callbacks",
        "pytorch_lightning.callbacks.model_checkpoint",
    ]
    for name in names:
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    model_checkpoint = type("ModelCheckpoint", (), {"__module__": names[-1]})
    sys.modules[names[-1]].ModelCheckpoint = model_checkpoint
    weights = {"model.diffusion_model.out.2.weight": _nonzero(4, 8, 3, 3)}
    checkpoint = {
        "epoch": 6,
        "global_step": 470000,
        "pytorch-lightning_version": "1.4.2",
        "state_dict": weights,
        "callbacks": {
            model_checkpoint: {"monitor": None, "best_model_score": None, "dirpath": "/x"}
        },
    }
    path = tmp_path / "sd-v1-4.ckpt"
    torch.save(checkpoint, path)
    for name in names:  # loading must not need (or import) pytorch_lightning
        monkeypatch.delitem(sys.modules, name)

    got = read_state_dict(path)
    assert set(got) == set(weights) and torch.equal(*got.values(), *weights.values())
    raw = load_pickle(path)
    ((key, state),) = raw["callbacks"].items()
    assert type(key).__name__ == "type" and key.__name__ == "LightningCallbackPlaceholder"
    assert state["dirpath"] == "/x"
    assert "pytorch_lightning" not in sys.modules
