"""Model hashes against hashlib computed here, and the cache's hits and invalidation."""
from __future__ import annotations

import hashlib
import json
import os

import pytest

from sdrt.loaders import hashes
from sdrt.loaders.hashes import (
    HashCache,
    addnet_hash_safetensors,
    autov2,
    autov3,
    legacy_model_hash,
    sha256,
)


@pytest.fixture(autouse=True)
def fresh_default_cache():
    """Each test gets an empty process-wide cache, and the previous one back afterwards."""
    old = hashes.set_default_cache(HashCache())
    yield
    hashes.set_default_cache(old)


@pytest.fixture
def open_count(monkeypatch):
    """Counts the files the hashing code opens."""
    calls: list[str] = []
    real = hashes._open_binary

    def counting(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(hashes, "_open_binary", counting)
    return calls


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _random(n: int) -> bytes:
    return os.urandom(n)


def _safetensors(header: dict, body: bytes) -> bytes:
    h = json.dumps(header).encode()
    return len(h).to_bytes(8, "little") + h + body


# ---- values -------------------------------------------------------------------------------------


def test_sha256_and_autov2_match_hashlib_across_chunks(tmp_path):
    data = _random(3 * hashes.CHUNK_SIZE + 12345)  # several chunks plus a partial one
    f = _write(tmp_path / "model.safetensors", data)
    want = hashlib.sha256(data).hexdigest()
    assert sha256(f) == want
    assert sha256(str(f)) == want
    assert autov2(f) == want[:10]


def test_legacy_hash_of_a_large_file(tmp_path):
    data = _random(0x100000 + 0x10000 + 777)
    f = _write(tmp_path / "model.ckpt", data)
    assert legacy_model_hash(f) == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]


def test_legacy_hash_of_a_file_ending_inside_the_window(tmp_path):
    data = _random(0x100000 + 100)  # only 100 bytes after the 1 MiB offset
    f = _write(tmp_path / "model.ckpt", data)
    assert legacy_model_hash(f) == hashlib.sha256(data[0x100000:]).hexdigest()[:8]


def test_legacy_hash_of_a_file_shorter_than_one_mib_hashes_nothing(tmp_path):
    f = _write(tmp_path / "small.ckpt", _random(5000))
    # A1111 seeks past the end and reads b"", so every such file hashes like the empty string.
    assert legacy_model_hash(f) == hashlib.sha256(b"").hexdigest()[:8] == "e3b0c442"


def test_addnet_hash_skips_the_header(tmp_path):
    body = _random(2 * hashes.CHUNK_SIZE + 99)
    meta = {"__metadata__": {"ss_output_name": "x"}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    f = _write(tmp_path / "lora.safetensors", _safetensors(meta, body))
    want = hashlib.sha256(body).hexdigest()
    assert addnet_hash_safetensors(f) == want
    assert autov3(f) == want[:12]
    # Changing only the metadata keeps the addnet hash but not the full sha256.
    meta["__metadata__"]["ss_output_name"] = "renamed"
    g = _write(tmp_path / "renamed.safetensors", _safetensors(meta, body))
    assert addnet_hash_safetensors(g) == want
    assert sha256(g) != sha256(f)


def test_addnet_hash_refuses_files_that_are_not_safetensors(tmp_path):
    with pytest.raises(ValueError, match="not a safetensors"):
        addnet_hash_safetensors(_write(tmp_path / "short.safetensors", b"\x01\x02"))
    huge = (10**9).to_bytes(8, "little") + _random(100)
    with pytest.raises(ValueError, match="exceeds file size"):
        addnet_hash_safetensors(_write(tmp_path / "bad.safetensors", huge))


@pytest.mark.parametrize("fn", [sha256, autov2, legacy_model_hash, addnet_hash_safetensors, autov3])
def test_missing_file_raises_naming_it(tmp_path, fn):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        fn(missing)


# ---- cache --------------------------------------------------------------------------------------


def test_second_call_does_not_reopen_the_file(tmp_path, open_count):
    data = _random(hashes.CHUNK_SIZE + 10)
    f = _write(tmp_path / "m.safetensors", data)
    first = sha256(f)
    assert len(open_count) == 1
    assert sha256(f) == first
    assert autov2(f) == first[:10]  # derived from the cached full hash
    assert sha256(os.path.relpath(f)) == first  # same file, another spelling of its path
    assert len(open_count) == 1


def test_kinds_are_cached_separately(tmp_path, open_count):
    f = _write(tmp_path / "m.safetensors", _safetensors({}, _random(0x120000)))
    full, legacy, addnet = sha256(f), legacy_model_hash(f), addnet_hash_safetensors(f)
    opened = len(open_count)
    assert (sha256(f), legacy_model_hash(f), addnet_hash_safetensors(f)) == (full, legacy, addnet)
    assert autov3(f) == addnet[:12]
    assert len(open_count) == opened
    assert len({full, addnet}) == 2


def test_cache_invalidated_when_size_and_mtime_change(tmp_path, open_count):
    f = _write(tmp_path / "m.ckpt", _random(4096))
    before = sha256(f)
    st = os.stat(f)
    data = _random(8192)
    f.write_bytes(data)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert sha256(f) == hashlib.sha256(data).hexdigest() != before
    assert len(open_count) == 2


def test_cache_invalidated_when_only_mtime_changes(tmp_path, open_count):
    f = _write(tmp_path / "m.ckpt", _random(4096))
    st = os.stat(f)
    sha256(f)
    data = _random(4096)  # same size
    f.write_bytes(data)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert sha256(f) == hashlib.sha256(data).hexdigest()
    assert len(open_count) == 2


def test_cache_invalidated_when_only_size_changes(tmp_path, open_count):
    f = _write(tmp_path / "m.ckpt", _random(4096))
    st = os.stat(f)
    sha256(f)
    data = _random(4000)
    f.write_bytes(data)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime as before
    assert sha256(f) == hashlib.sha256(data).hexdigest()
    assert len(open_count) == 2


def test_injected_cache_and_clear(tmp_path, open_count):
    f = _write(tmp_path / "m.ckpt", _random(1000))
    mine = HashCache()
    sha256(f, cache=mine)
    assert len(mine) == 1 and len(hashes.get_default_cache()) == 0
    sha256(f, cache=mine)
    assert len(open_count) == 1
    mine.clear()
    sha256(f, cache=mine)
    assert len(open_count) == 2
    sha256(f)  # the default cache is separate
    hashes.clear_cache()
    sha256(f)
    assert len(open_count) == 4


def test_persistent_cache_survives_a_restart(tmp_path, open_count):
    f = _write(tmp_path / "m.safetensors", _random(3000))
    cache_file = tmp_path / "cache" / "hashes.json"  # the folder is created on first save
    want = sha256(f, cache=HashCache(cache_file))
    assert cache_file.exists()
    assert not [p for p in cache_file.parent.iterdir() if p.name.endswith(".tmp")]  # temp replaced
    reloaded = HashCache(cache_file)  # a fresh process
    assert sha256(f, cache=reloaded) == want
    assert len(open_count) == 1
    assert json.loads(cache_file.read_text())["hashes"]["sha256"][str(f)]["hash"] == want


@pytest.mark.parametrize(
    "garbage",
    [b"{not json", b"\xff\xfe\x00", b"[]", b'{"version": 1, "hashes": []}', b'{"version": 99, "hashes": {}}',
     b'{"version": 1, "hashes": {"sha256": {"/x": {"mtime_ns": "1", "size": 1, "hash": "ab"}}}}'],
)
def test_corrupt_cache_file_is_ignored_and_rewritten(tmp_path, garbage):
    f = _write(tmp_path / "m.safetensors", _random(3000))
    cache_file = _write(tmp_path / "hashes.json", garbage)
    cache = HashCache(cache_file)
    assert len(cache) == 0
    want = hashlib.sha256(f.read_bytes()).hexdigest()
    assert sha256(f, cache=cache) == want
    assert HashCache(cache_file).get(str(f), "sha256", hashes._stamp(str(f))) == want


def test_stale_persistent_entry_is_not_trusted(tmp_path):
    f = _write(tmp_path / "m.ckpt", _random(3000))
    cache_file = tmp_path / "hashes.json"
    sha256(f, cache=HashCache(cache_file))
    data = _random(3001)
    f.write_bytes(data)
    assert sha256(f, cache=HashCache(cache_file)) == hashlib.sha256(data).hexdigest()


def test_file_changing_during_hashing_is_not_cached(tmp_path, monkeypatch):
    f = _write(tmp_path / "m.ckpt", _random(3000))
    real = hashes._digest_from

    def digest_then_append(path, start=0, length=None):
        out = real(path, start, length)
        with open(path, "ab") as g:
            g.write(b"more")
        return out

    monkeypatch.setattr(hashes, "_digest_from", digest_then_append)
    cache = HashCache()
    sha256(f, cache=cache)
    assert len(cache) == 0
