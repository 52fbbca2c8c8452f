"""A1111 chunking (75 + BOS/EOS, comma backtracking, BREAK, embeddings) and conditioning
(chunks concatenated, "Original" emphasis, clip skip, textual-inversion vectors) on a tiny CLIP."""
import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModel

from sdrt.backends.torch_backend import TorchBackend
from sdrt.prompt import get_tokenizer
from sdrt.prompt.chunking import BOS, COMMA, EOS, tokenize_prompt
from sdrt.prompt.conditioning import ConditioningOptions, encode_texts, scheduled_conditioning, single_encoder


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer()


@pytest.fixture(scope="module")
def backend():
    torch.manual_seed(0)
    te = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                      num_attention_heads=2, max_position_embeddings=77))
    # A fresh final LayerNorm (weight 1, bias 0) gives every token vector mean 0, and "Original"
    # emphasis divides by the mean; trained encoders are not like that, so perturb it.
    for p in te.parameters():
        if p.dim() == 1:
            torch.nn.init.normal_(p, 0.2, 0.5)
    return TorchBackend(torch.nn.Identity(), te, torch.nn.Identity())


def words(n, word="cat"):
    return " ".join([word] * n)  # "cat" is one token


def test_short_prompt_is_one_padded_chunk_with_multipliers(tok):
    chunks, count = tokenize_prompt("a (red:1.5) cat", tok)
    assert count == 3 and len(chunks) == 1
    c = chunks[0]
    assert len(c.tokens) == 77 and c.tokens[0] == BOS and c.tokens[-1] == EOS and c.tokens[4:] == [EOS] * 73
    assert c.multipliers[:5] == [1.0, 1.0, 1.5, 1.0, 1.0]


def test_long_prompt_splits_at_75_and_counts_tokens(tok):
    chunks, count = tokenize_prompt(words(80), tok)
    assert count == 80 and len(chunks) == 2
    assert chunks[0].tokens[1:76] == [tok.convert_tokens_to_ids("cat</w>")] * 75
    assert chunks[1].tokens[1:6] == chunks[0].tokens[1:6] and chunks[1].tokens[6] == EOS


def test_comma_backtrack_moves_the_tail_to_the_next_chunk(tok):
    prompt = words(70) + ", " + words(10, "dog")  # comma is token 71; the chunk fills 4 tokens later
    chunks, _ = tokenize_prompt(prompt, tok)
    assert chunks[0].tokens[71] == COMMA and chunks[0].tokens[72:] == [EOS] * 5
    dog = tok.convert_tokens_to_ids("dog</w>")
    assert chunks[1].tokens[1:11] == [dog] * 10
    no_backtrack, _ = tokenize_prompt(prompt, tok, comma_backtrack=0)
    assert no_backtrack[0].tokens[72:76] == [dog] * 4


def test_break_starts_a_new_chunk(tok):
    chunks, _ = tokenize_prompt("red circle BREAK blue square", tok)
    assert len(chunks) == 2
    assert tok.decode(chunks[1].tokens[1:3]) == "blue square"


def test_embedding_takes_its_vectors_and_moves_whole(tok):
    emb_id = tok.convert_tokens_to_ids("toy</w>")
    vectors = torch.randn(4, 32)

    def find(tokens, pos):
        return ("toyemb", vectors, 1) if tokens[pos] == emb_id else None

    chunks, _ = tokenize_prompt(words(73) + " toy", tok, find_embedding=find)
    assert len(chunks) == 2  # 73 + 4 > 75: the embedding moves to the next chunk whole
    slot = chunks[1].embeddings[0]
    assert slot.offset == 1 and chunks[1].tokens[1:5] == [0] * 4


def test_encode_concatenates_chunks_and_keeps_the_mean(tok, backend):
    opts = ConditioningOptions()
    z = encode_texts([words(80), "a cat"], tok, backend.encode_text, opts)
    assert z.shape == (2, 154, 32)
    plain = encode_texts(["a cat"], tok, backend.encode_text, opts)
    weighted = encode_texts(["a (cat:1.5)"], tok, backend.encode_text, opts)
    assert weighted.mean().item() == pytest.approx(plain.mean().item(), rel=1e-5)
    ratio = weighted[0, 2] / plain[0, 2]  # the weighted token, scaled by 1.5 then renormalised
    renorm = ratio / ratio.mean()
    assert torch.allclose(renorm, torch.ones_like(renorm), atol=1e-4)
    assert ratio.mean().item() > 1.3
    ignored = encode_texts(["a (cat:1.5)"], tok, backend.encode_text, ConditioningOptions(emphasis="Ignore"))
    assert torch.equal(ignored, plain)
    literal = encode_texts(["a (cat:1.5)"], tok, backend.encode_text, ConditioningOptions(emphasis="None"))
    as_text = encode_texts(["a \\(cat:1.5\\)"], tok, backend.encode_text, opts)  # escaped brackets: the same tokens
    assert torch.allclose(literal, as_text, atol=1e-6) and not torch.allclose(literal, plain)


def test_clip_skip_is_final_layer_norm_of_an_earlier_layer(tok, backend):
    ids = tok(["a cat"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    out = backend.text_encoder(ids, output_hidden_states=True)
    text_model = getattr(backend.text_encoder, "text_model", backend.text_encoder)
    want = text_model.final_layer_norm(out.hidden_states[-2])
    assert torch.allclose(backend.encode_text(ids, clip_skip=2), want)
    assert torch.allclose(backend.encode_text(ids, clip_skip=1), out.last_hidden_state)


def test_textual_inversion_vectors_reach_the_encoder(tok, backend):
    emb_id = tok.convert_tokens_to_ids("toy</w>")
    table = backend.text_encoder.get_input_embeddings().weight
    same = table[emb_id][None].clone()

    def finder(vectors):
        return lambda tokens, pos: ("toyemb", vectors, 1) if tokens[pos] == emb_id else None

    base = encode_texts(["a toy"], tok, backend.encode_text, ConditioningOptions())
    # the word's own embedding as a 1-vector embedding reproduces the plain prompt...
    again = encode_texts(["a toy"], tok, backend.encode_text, ConditioningOptions(find_embedding=finder(same)))
    assert torch.allclose(base, again, atol=1e-6)
    # ...and other vectors change the conditioning from that position on (causal attention)
    other = encode_texts(["a toy"], tok, backend.encode_text,
                         ConditioningOptions(find_embedding=finder(torch.randn(2, 32))))
    assert torch.allclose(other[0, :2], base[0, :2], atol=1e-6) and not torch.allclose(other[0, 2], base[0, 2])


def test_scheduled_conditioning_switches_at_the_step(tok, backend):
    sc = scheduled_conditioning("a [red:blue:3] cat", 10, single_encoder(tok, backend.encode_text, ConditioningOptions()))
    red = encode_texts(["a red cat"], tok, backend.encode_text, ConditioningOptions())[0]
    blue = encode_texts(["a blue cat"], tok, backend.encode_text, ConditioningOptions())[0]
    assert sc.ends == [3, 10]
    assert torch.allclose(sc.at(0), red, atol=1e-5) and torch.allclose(sc.at(3), red, atol=1e-5)
    assert torch.allclose(sc.at(4), blue, atol=1e-5)


def test_bad_options():
    with pytest.raises(ValueError, match=r"emphasis='Loud'"):
        ConditioningOptions(emphasis="Loud")
    with pytest.raises(ValueError, match=r"clip_skip=0"):
        ConditioningOptions(clip_skip=0)


def test_pad_after_eos_keeps_the_first_eos_and_pads_what_follows():
    from sdrt.prompt.chunking import BOS, EOS, pad_after_eos

    ids = torch.tensor([[BOS, 320, 2368, EOS, EOS, EOS], [BOS, 320, 2368, 539, 1125, EOS]])
    assert pad_after_eos(ids, 0).tolist() == [[BOS, 320, 2368, EOS, 0, 0], [BOS, 320, 2368, 539, 1125, EOS]]
    assert pad_after_eos(ids, EOS) is ids  # CLIP-L keeps its EOS padding
