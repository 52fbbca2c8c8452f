import socket

import pytest

from sdrt.prompt import get_tokenizer

BOS, EOS = 49406, 49407

# Expected ids (without bos/eos) produced by open_clip's pure-Python SimpleTokenizer:
# open_clip/tokenizer.py and open_clip/bpe_simple_vocab_16e6.txt.gz were extracted from
# open_clip_torch-3.3.0-py3-none-any.whl, the module was imported standalone (with ftfy 6.3.1 and
# regex installed), and each row is `SimpleTokenizer().encode(text)` with its default settings.
# The strings avoid text that ftfy.fix_text / html.unescape would change (curly quotes, fullwidth
# characters, ligatures, mojibake, html entities, control characters): open_clip cleans those first
# and the HF tokenizer does not.
OPEN_CLIP_TABLE = [
    ("(masterpiece:1.2), best quality, 1girl", [263, 12066, 281, 272, 269, 273, 2361, 949, 3027, 267, 272, 1611]),
    ("Hello, World!", [3306, 267, 1002, 256]),
    ("don't stop, it's FINE", [847, 713, 1691, 267, 585, 568, 3797]),
    ("a   cat \t\n on  a mat", [320, 2368, 525, 320, 9063]),
    ("3.14159 and 1,000,000", [274, 269, 272, 275, 272, 276, 280, 537, 272, 267, 271, 271, 271, 267, 271, 271, 271]),
    ("café naïve résumé", [15304, 1097, 35689, 563, 29106, 7054, 4166]),
    ("日本語のテキスト", [39121, 44353, 34002, 252, 21575, 2429, 228, 47121, 32421, 486]),
    ("emoji 😀 🐱", [16327, 7334, 22979]),
    (
        "[cat:dog:0.5], ((detailed)), <lora:x:0.8>",
        [314, 2368, 281, 1929, 281, 271, 269, 276, 34067, 13796, 12609, 8, 2361, 283, 2179, 320, 281, 343, 281, 271, 269, 279, 285],
    ),
    ("supercalifragilisticexpialidocious", [1642, 2857, 13093, 2076, 5868, 26850, 835, 639, 38466]),
    ("lowres, bad anatomy, bad hands, jpeg artifacts", [1049, 934, 267, 2103, 15376, 267, 2103, 3500, 267, 73, 11207, 30249]),
    ("HTTPServerError camelCase snake_case", [10620, 79, 803, 11135, 81, 2843, 27005, 2068, 8798, 318, 2068]),
]


def test_photo_of_a_cat():
    assert get_tokenizer()("a photo of a cat").input_ids == [BOS, 320, 1125, 539, 320, 2368, EOS]


@pytest.mark.parametrize("text,expected", OPEN_CLIP_TABLE)
def test_matches_open_clip(text, expected):
    assert get_tokenizer()(text, add_special_tokens=False).input_ids == expected
    assert get_tokenizer()(text).input_ids == [BOS, *expected, EOS]


def test_vocab_and_special_tokens():
    tok = get_tokenizer()
    assert len(tok) == 49408
    assert tok.vocab_size == 49408
    assert tok.bos_token == "<|startoftext|>" and tok.bos_token_id == BOS
    assert tok.eos_token == "<|endoftext|>" and tok.eos_token_id == EOS
    assert tok.pad_token_id == EOS and tok.unk_token_id == EOS
    assert tok.model_max_length == 77
    assert tok.convert_tokens_to_ids(["!", "a</w>", "cat</w>"]) == [0, 320, 2368]


def test_pad_to_max_length():
    enc = get_tokenizer()("a photo of a cat", padding="max_length", max_length=77)
    assert len(enc.input_ids) == 77
    assert enc.input_ids[:7] == [BOS, 320, 1125, 539, 320, 2368, EOS]
    assert enc.input_ids[7:] == [EOS] * 70
    assert enc.attention_mask == [1] * 7 + [0] * 70


def test_truncate_to_max_length():
    enc = get_tokenizer()("cat " * 200, truncation=True, max_length=77)
    assert enc.input_ids == [BOS] + [2368] * 75 + [EOS]


def test_offline_and_cached(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("get_tokenizer() tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    get_tokenizer.cache_clear()
    tok = get_tokenizer()
    assert tok("a photo of a cat").input_ids == [BOS, 320, 1125, 539, 320, 2368, EOS]
    assert get_tokenizer() is tok
