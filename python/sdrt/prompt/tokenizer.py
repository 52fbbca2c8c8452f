"""Offline CLIP tokenizer.

Stable Diffusion's text encoders use OpenAI's CLIP BPE tokenizer. The usual
``CLIPTokenizer.from_pretrained(...)`` needs the Hugging Face hub (or a warm
cache), and sdrt must tokenize prompts with no network access at run time. So we
build the tokenizer ourselves from CLIP's BPE merge list, shipped in ``assets/``
(origin and license: ``assets/LICENSE-CLIP-BPE.txt``), laying out the vocabulary
exactly as CLIP's original ``SimpleTokenizer`` does.
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources
import json
import os
import tempfile

import transformers

__all__ = ["get_tokenizer", "make_tokenizer", "BOS_TOKEN", "EOS_TOKEN", "MODEL_MAX_LENGTH", "VOCAB_SIZE"]

BOS_TOKEN = "<|startoftext|>"  # id 49406
EOS_TOKEN = "<|endoftext|>"  # id 49407; also pad and unk
MODEL_MAX_LENGTH = 77
VOCAB_SIZE = 49408
_NUM_MERGES = 49152 - 256 - 2  # as in CLIP's SimpleTokenizer
_BPE_ASSET = "bpe_simple_vocab_16e6.txt.gz"


def _bytes_to_unicode() -> list[str]:
    """CLIP/GPT-2 byte -> printable unicode char table, in byte order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    asset = importlib.resources.files(__package__) / "assets" / _BPE_ASSET
    lines = gzip.decompress(asset.read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 1 + _NUM_MERGES]]  # line 0 is a header
    chars = _bytes_to_unicode()
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + [BOS_TOKEN, EOS_TOKEN]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE or any(len(m) != 2 for m in merges):
        raise RuntimeError(f"unexpected CLIP BPE asset: {len(vocab)} tokens")
    return vocab, merges


@functools.lru_cache(maxsize=None)
def get_tokenizer() -> transformers.PreTrainedTokenizerBase:
    """Return the (shared) CLIP tokenizer; bos 49406, eos/pad/unk 49407, max length 77."""
    return make_tokenizer()


def make_tokenizer(pad_token: str = EOS_TOKEN) -> transformers.PreTrainedTokenizerBase:
    """A new CLIP tokenizer (not the shared one: callers such as diffusers' textual-inversion loader
    may add tokens to it). pad_token="!" (id 0) is SDXL's second tokenizer, OpenCLIP's padding."""
    vocab, merges = _vocab_and_merges()
    special = dict(bos_token=BOS_TOKEN, eos_token=EOS_TOKEN, pad_token=pad_token, unk_token=EOS_TOKEN)
    if int(transformers.__version__.split(".")[0]) >= 5:
        return transformers.CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MODEL_MAX_LENGTH, **special)
    # transformers 4.x only takes file paths. Use the fast (tokenizers-backed) class there: it is what
    # CLIPTokenizer is in 5.x, so both versions normalize text the same way.
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file, merges_file = os.path.join(tmp, "vocab.json"), os.path.join(tmp, "merges.txt")
        with open(vocab_file, "w", encoding="utf-8") as f:
            json.dump(vocab, f, ensure_ascii=False)
        with open(merges_file, "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
        return transformers.CLIPTokenizerFast(
            vocab_file=vocab_file, merges_file=merges_file, model_max_length=MODEL_MAX_LENGTH, **special
        )
