"""A1111's extra-network tag syntax (modules/extra_networks.py, extra_networks_lora.py)."""
import pytest

from sdrt.prompt.extra_networks import LoraTag, lora_tags, parse_prompt


def test_tags_are_cut_out_and_split():
    text, found = parse_prompt("a red circle <lora:shapes:0.8>, white background <hypernet:x:1> <lora:b>")
    assert text == "a red circle , white background  "
    assert [p.items for p in found["lora"]] == [("shapes", "0.8"), ("b",)]
    assert [p.items for p in found["hypernet"]] == [("x", "1")]


@pytest.mark.parametrize("tag,want", [
    ("<lora:a>", LoraTag("a", 1.0, 1.0)),
    ("<lora:a:0.5>", LoraTag("a", 0.5, 0.5)),            # unet defaults to te
    ("<lora:a:0.5:0.25>", LoraTag("a", 0.5, 0.25)),
    ("<lora:a:te=0.3:unet=0.9>", LoraTag("a", 0.3, 0.9)),  # named items override
    ("<lora:sub/a b:1.2>", LoraTag("sub/a b", 1.2, 1.2)),
])
def test_lora_weights_follow_a1111(tag, want):
    assert lora_tags(parse_prompt(f"x {tag} y")[1]["lora"]) == [want]


def test_bad_lora_tags_name_the_tag():
    with pytest.raises(ValueError, match=r"<lora:a:strong>: weights must be numbers"):
        lora_tags(parse_prompt("<lora:a:strong>")[1]["lora"])
    with pytest.raises(ValueError, match="has no LoRA name"):
        lora_tags(parse_prompt("<lora: :1>")[1]["lora"])


def test_text_without_tags_is_unchanged():
    assert parse_prompt("(a:1.2) [b|c] AND d") == ("(a:1.2) [b|c] AND d", {})
