"""read_state_dict and read_safetensors_header: round trips through every supported container,
dtype casts, key selection, and refusal of damaged or unsupported files (always naming the file)."""
from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import sdrt.loaders.state_dict as sd_mod
from sdrt.loaders.state_dict import ModelFileError, read_safetensors_header, read_state_dict


def _nonzero(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Random values bounded away from zero, so a zero-filled (unread) tensor can never pass."""
    g = torch.Generator().manual_seed(seed)
    magnitude = torch.rand(shape, generator=g) + 0.5
    sign = torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0)
    return (magnitude * sign).to(dtype)


def _weights() -> dict[str, torch.Tensor]:
    return {
        "model.diffusion_model.input_blocks.0.0.weight": _nonzero((8, 4, 3, 3), torch.float32, 1),
        "model.diffusion_model.input_blocks.0.0.bias": _nonzero((8,), torch.float16, 2),
        "first_stage_model.decoder.conv_out.weight": _nonzero((3, 8, 3, 3), torch.bfloat16, 3),
        "cond_stage_model.transformer.text_model.embeddings.position_ids": (
            torch.arange(1, 78)[None]
        ),
    }


def _assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert set(got) == set(want)
    for name, tensor in want.items():
        assert got[name].dtype == tensor.dtype, name
        assert torch.equal(got[name], tensor), name
        assert type(got[name]) is torch.Tensor, name  # Parameters come back as plain tensors


def _write_safetensors(
    path: Path, header: dict, data: bytes, header_len: int | None = None
) -> Path:
    raw = json.dumps(header).encode()
    n = len(raw) if header_len is None else header_len
    path.write_bytes(struct.pack("<Q", n) + raw + data)
    return path


def _entry(dtype: str, shape: list[int], start: int, end: int) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [start, end]}


# --------------------------------------------------------------------------------------------
# round trips
# --------------------------------------------------------------------------------------------


def test_safetensors_round_trip_and_header(tmp_path: Path) -> None:
    weights = _weights()
    path = tmp_path / "model.safetensors"
    save_file(weights, str(path), metadata={"ss_network_dim": "4", "format": "pt"})

    _assert_same(read_state_dict(path), weights)

    header = read_safetensors_header(path)
    assert header.metadata == {"ss_network_dim": "4", "format": "pt"}
    (n,) = struct.unpack("<Q", path.read_bytes()[:8])
    assert header.data_start == 8 + n
    assert set(header.tensors) == set(weights)
    dtype, shape, (start, end) = header.tensors["first_stage_model.decoder.conv_out.weight"]
    assert (dtype, shape, end - start) == ("BF16", (3, 8, 3, 3), 3 * 8 * 9 * 2)
    # The span points at the tensor's bytes.
    raw = path.read_bytes()[header.data_start + start : header.data_start + end]
    expected = weights["first_stage_model.decoder.conv_out.weight"]
    assert raw == expected.contiguous().view(torch.uint8).numpy().tobytes()


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth", ".bin"])
def test_zip_pickle_round_trip(tmp_path: Path, suffix: str) -> None:
    weights = _weights()
    path = tmp_path / f"model{suffix}"
    torch.save(weights, path)
    _assert_same(read_state_dict(path), weights)


def test_legacy_pickle_round_trip(tmp_path: Path) -> None:
    weights = _weights()
    path = tmp_path / "old.pt"
    torch.save(weights, path, _use_new_zipfile_serialization=False)
    assert not path.read_bytes().startswith(b"PK")  # really the pre-1.6 format
    _assert_same(read_state_dict(path), weights)


@pytest.mark.parametrize("legacy", [False, True])
def test_nested_state_dict_is_unwrapped(tmp_path: Path, legacy: bool) -> None:
    weights = _weights()
    path = tmp_path / "a1111.ckpt"
    checkpoint = {
        "state_dict": weights,
        "global_step": 470000,
        "epoch": 6,
        "optimizer_states": [{"lr": 1e-4}],
    }
    torch.save(checkpoint, path, _use_new_zipfile_serialization=not legacy)
    got = read_state_dict(path)
    _assert_same(got, weights)
    assert "global_step" not in got and "epoch" not in got


def test_parameters_are_returned_as_tensors(tmp_path: Path) -> None:
    weights = {"w": torch.nn.Parameter(_nonzero((3, 3), torch.float32, 4))}
    path = tmp_path / "params.pt"
    torch.save(weights, path)
    got = read_state_dict(path)
    assert type(got["w"]) is torch.Tensor and not got["w"].requires_grad
    assert torch.equal(got["w"], weights["w"].detach())


# --------------------------------------------------------------------------------------------
# dtype and key selection
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dtype_casts_floating_tensors_only(tmp_path: Path, suffix: str, dtype: torch.dtype) -> None:
    weights = _weights()
    path = tmp_path / f"model{suffix}"
    if suffix == ".safetensors":
        save_file(weights, str(path))
    else:
        torch.save(weights, path)
    got = read_state_dict(path, dtype=dtype)
    for name, tensor in weights.items():
        if tensor.is_floating_point():
            assert got[name].dtype == dtype, name
            assert torch.equal(got[name], tensor.to(dtype)), name
        else:
            assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor), name


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_keys_selection(tmp_path: Path, suffix: str) -> None:
    weights = _weights()
    path = tmp_path / f"model{suffix}"
    if suffix == ".safetensors":
        save_file(weights, str(path))
    else:
        torch.save(weights, path)
    vae = "first_stage_model.decoder.conv_out.weight"

    got = read_state_dict(path, keys=[vae])
    assert list(got) == [vae] and torch.equal(got[vae], weights[vae])
    assert list(read_state_dict(path, keys=vae)) == [vae]  # one str is one key

    got = read_state_dict(path, keys=lambda k: k.startswith("model.diffusion_model."))
    assert set(got) == {k for k in weights if k.startswith("model.diffusion_model.")}

    with pytest.raises(ModelFileError) as err:
        read_state_dict(path, keys=[vae, "no.such.key"])
    assert str(path) in str(err.value) and "no.such.key" in str(err.value)


def test_safetensors_keys_read_only_the_selected_tensors(tmp_path: Path, monkeypatch) -> None:
    weights = _weights()
    path = tmp_path / "model.safetensors"
    save_file(weights, str(path))
    read: list[str] = []
    real_safe_open = sd_mod.safe_open

    class RecordingOpen:
        def __init__(self, *args, **kwargs):
            self._inner = real_safe_open(*args, **kwargs)

        def __enter__(self):
            self._file = self._inner.__enter__()
            return self

        def __exit__(self, *exc):
            return self._inner.__exit__(*exc)

        def get_tensor(self, name):
            read.append(name)
            return self._file.get_tensor(name)

    monkeypatch.setattr(sd_mod, "safe_open", RecordingOpen)
    vae = "first_stage_model.decoder.conv_out.weight"
    got = read_state_dict(path, keys=[vae])
    assert read == [vae]
    assert torch.equal(got[vae], weights[vae])


# --------------------------------------------------------------------------------------------
# damaged safetensors
# --------------------------------------------------------------------------------------------


@pytest.fixture
def no_safe_open(monkeypatch):
    """Header problems must be caught by our own check, before the library opens the file."""

    def refuse(*args, **kwargs):
        raise AssertionError("safe_open must not be reached for a bad header")

    monkeypatch.setattr(sd_mod, "safe_open", refuse)


def test_truncated_safetensors_names_first_cut_tensor(tmp_path: Path, no_safe_open) -> None:
    weights = {f"t{i}": _nonzero((64,), torch.float32, 10 + i) for i in range(6)}
    path = tmp_path / "cut.safetensors"
    save_file(weights, str(path))
    header = read_safetensors_header(path)
    spans = sorted((span, name) for name, (_, _, span) in header.tensors.items())
    # Cut in the middle of the fourth tensor's data: it is the first one beyond the end.
    (start, end), cut_name = spans[3]
    cut_at = header.data_start + (start + end) // 2
    path.write_bytes(path.read_bytes()[:cut_at])

    for call in (read_safetensors_header, read_state_dict):
        with pytest.raises(ModelFileError) as err:
            call(path)
        msg = str(err.value)
        assert str(path) in msg and repr(cut_name) in msg and "truncated" in msg
        assert err.value.key == cut_name


def test_corrupt_header_json(tmp_path: Path, no_safe_open) -> None:
    path = tmp_path / "bad.safetensors"
    raw = b'{"a": {"dtype": "F32", "shape": [1], '
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 4)
    with pytest.raises(ModelFileError, match="not valid JSON") as err:
        read_state_dict(path)
    assert str(path) in str(err.value)


def test_header_not_an_object(tmp_path: Path, no_safe_open) -> None:
    path = tmp_path / "list.safetensors"
    raw = b"[1, 2, 3]"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    with pytest.raises(ModelFileError, match="not a JSON object"):
        read_safetensors_header(path)


@pytest.mark.parametrize("header_len", [10_000, 2**40])
def test_header_length_beyond_file(tmp_path: Path, no_safe_open, header_len: int) -> None:
    path = _write_safetensors(
        tmp_path / "long.safetensors", {"a": _entry("F32", [1], 0, 4)}, b"\0" * 4, header_len
    )
    with pytest.raises(ModelFileError, match="header length") as err:
        read_state_dict(path)
    assert str(path) in str(err.value)


def test_file_shorter_than_length_prefix(tmp_path: Path) -> None:
    path = tmp_path / "tiny.safetensors"
    path.write_bytes(b"\x01\x02")
    with pytest.raises(ModelFileError, match="too short"):
        read_safetensors_header(path)


def test_unknown_dtype(tmp_path: Path, no_safe_open) -> None:
    path = _write_safetensors(
        tmp_path / "dtype.safetensors",
        {"ok": _entry("F32", [1], 0, 4), "weird": _entry("F7", [1], 4, 5)},
        b"\0" * 5,
    )
    with pytest.raises(ModelFileError, match="unknown dtype 'F7'") as err:
        read_state_dict(path)
    assert str(path) in str(err.value) and "'weird'" in str(err.value)


def test_overlapping_spans(tmp_path: Path, no_safe_open) -> None:
    path = _write_safetensors(
        tmp_path / "overlap.safetensors",
        {"a": _entry("F32", [2], 0, 8), "b": _entry("F32", [2], 4, 12)},
        b"\1" * 12,
    )
    with pytest.raises(ModelFileError, match="overlaps") as err:
        read_state_dict(path)
    msg = str(err.value)
    assert str(path) in msg and "'a'" in msg and "'b'" in msg


@pytest.mark.parametrize(
    ("entries", "data_len", "match"),
    [
        ({"a": _entry("F32", [3], 0, 8)}, 8, "needs 12"),  # span size != numel * itemsize
        ({"a": _entry("F32", [1], 4, 8)}, 8, "hole"),  # unindexed bytes (polyglot room)
        ({"a": _entry("F32", [1], 0, 4)}, 8, "trailing"),
        ({"a": _entry("F32", [-1], 0, 4)}, 4, "invalid shape"),
        ({"a": _entry("F32", [1], 4, 0)}, 4, "invalid data_offsets"),
        ({"a": {"dtype": "F32", "shape": [1]}}, 4, "invalid data_offsets"),
        ({"__metadata__": {"n": 4}, "a": _entry("F32", [1], 0, 4)}, 4, "must be strings"),
    ],
)
def test_malformed_entries(tmp_path: Path, no_safe_open, entries, data_len, match) -> None:
    path = _write_safetensors(tmp_path / "bad.safetensors", entries, b"\1" * data_len)
    with pytest.raises(ModelFileError, match=match) as err:
        read_state_dict(path)
    assert str(path) in str(err.value)


def test_duplicate_tensor_names_refused(tmp_path: Path, no_safe_open) -> None:
    path = tmp_path / "dup.safetensors"
    one = json.dumps(_entry("F32", [1], 0, 4))
    raw = f'{{"a": {one}, "a": {one}}}'.encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\1" * 4)
    with pytest.raises(ModelFileError, match="duplicate key 'a'"):
        read_state_dict(path)


def test_empty_tensors_are_fine(tmp_path: Path) -> None:
    weights = {"empty": torch.zeros(0, 4), "x": _nonzero((4,), torch.float32, 5)}
    path = tmp_path / "empty.safetensors"
    save_file(weights, str(path))
    _assert_same(read_state_dict(path), weights)


# --------------------------------------------------------------------------------------------
# other refusals
# --------------------------------------------------------------------------------------------


def test_truncated_ckpt_zip(tmp_path: Path) -> None:
    path = tmp_path / "cut.ckpt"
    torch.save(_weights(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated") as err:
        read_state_dict(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("name", ["model.onnx", "model.gguf", "model"])
def test_unsupported_extension(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"\0" * 16)
    with pytest.raises(ModelFileError, match="unsupported model file extension") as err:
        read_state_dict(path)
    msg = str(err.value)
    assert str(path) in msg
    for ext in (".safetensors", ".ckpt", ".pt", ".pth", ".bin"):
        assert ext in msg


@pytest.mark.parametrize("name", ["absent.safetensors", "absent.ckpt"])
def test_missing_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    with pytest.raises(ModelFileError, match="not found") as err:
        read_state_dict(path)
    assert str(path) in str(err.value)
    with pytest.raises(ModelFileError, match="not found"):
        read_safetensors_header(path)


def test_non_tensor_value_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "mixed.pt"
    torch.save({"w": _nonzero((2,), torch.float32, 6), "step": 1234}, path)
    with pytest.raises(ModelFileError, match="not a tensor") as err:
        read_state_dict(path)
    assert str(path) in str(err.value) and "'step'" in str(err.value)


def test_pickle_of_a_list_is_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([_nonzero((2,), torch.float32, 7)], path)
    with pytest.raises(ModelFileError, match="not a dict of tensors"):
        read_state_dict(path)


def test_model_file_error_is_a_picklable_value_error(tmp_path: Path) -> None:
    err = ModelFileError(tmp_path / "x.ckpt", "broken", "some.key")
    assert isinstance(err, ValueError)
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.key == "some.key"
