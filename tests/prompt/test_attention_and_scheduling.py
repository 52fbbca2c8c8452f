"""A1111's documented examples for parse_prompt_attention and get_learned_conditioning_prompt_schedules
(../shared/A1111_REFERENCE.md, from the doctests of AUTOMATIC1111's modules/prompt_parser.py)."""
import pytest

from sdrt.prompt import get_learned_conditioning_prompt_schedules, parse_prompt_attention, split_and


@pytest.mark.parametrize("text,expected", [
    ("normal text", [["normal text", 1.0]]),
    ("an (important) word", [["an ", 1.0], ["important", 1.1], [" word", 1.0]]),
    ("(unbalanced", [["unbalanced", 1.1]]),
    ("\\(literal\\]", [["(literal]", 1.0]]),
    ("(unnecessary)(parens)", [["unnecessaryparens", 1.1]]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [["a ", 1.0], ["house", 1.5730000000000004], [" ", 1.1], ["on", 1.0], [" a ", 1.1], ["hill", 0.55],
      [", sun, ", 1.1], ["sky", 1.4641000000000006], [".", 1.1]]),
])
def test_parse_prompt_attention_documented_examples(text, expected):
    assert parse_prompt_attention(text) == expected  # exact floats, as A1111's doctests print them


def test_parse_prompt_attention_edge_cases():
    assert parse_prompt_attention("") == [["", 1.0]]
    assert parse_prompt_attention("a BREAK b") == [["a", 1.0], ["BREAK", -1], ["b", 1.0]]
    assert parse_prompt_attention("x:1.2)") == [["x:1.2)", 1.0]]  # weight without an open bracket is text
    assert parse_prompt_attention("(a: 1.5 )") == [["a", 1.5]]
    assert parse_prompt_attention("[[x]]") == [["x", pytest.approx(1 / 1.21)]]
    assert parse_prompt_attention("a \\\\ b") == [["a \\ b", 1.0]]


@pytest.mark.parametrize("prompt,expected", [
    ("test", [[10, "test"]]),
    ("a [b:3]", [[3, "a "], [10, "a b"]]),
    ("a [b: 3]", [[3, "a "], [10, "a b"]]),
    ("a [[[b]]:2]", [[2, "a "], [10, "a [[b]]"]]),
    ("[(a:2):3]", [[3, ""], [10, "(a:2)"]]),
    ("a [b : c : 1] d", [[1, "a b  d"], [10, "a  c  d"]]),
    ("a[b:[c:d:2]:1]e", [[1, "abe"], [2, "ace"], [10, "ade"]]),
    ("a [unbalanced", [[10, "a [unbalanced"]]),
    ("a [b:.5] c", [[5, "a  c"], [10, "a b c"]]),
    ("((a][:b:c [d:3]", [[3, "((a][:b:c "], [10, "((a][:b:c d"]]),
    ("[a|(b:1.1)]", [[i, "a" if i % 2 else "(b:1.1)"] for i in range(1, 11)]),
    ("[fe|]male", [[i, "female" if i % 2 else "male"] for i in range(1, 11)]),
])
def test_prompt_schedules_documented_examples(prompt, expected):
    assert get_learned_conditioning_prompt_schedules([prompt], 10)[0] == expected


def test_fraction_needs_a_dot_and_hires_offsets():
    g = lambda p, **kw: get_learned_conditioning_prompt_schedules([p], 10, **kw)[0]  # noqa: E731
    assert g("a [b:c:0.3]") == [[3, "a b"], [10, "a c"]]
    assert g("a [b:c:1.0]") == [[10, "a b"]]            # "1.0" is the whole run: never switches
    assert g("a [b:c:1.5]", use_old_scheduling=True) == [[1, "a b"], [10, "a c"]]
    # hires pass of 4 steps after 10 base steps: 12 -> step 2 of the pass, 1.5 -> half of it
    assert get_learned_conditioning_prompt_schedules(["a [b:c:12]"], 10, hires_steps=4)[0] == [[2, "a b"], [4, "a c"]]
    assert get_learned_conditioning_prompt_schedules(["a [b:c:1.5]"], 10, hires_steps=4)[0] == [[2, "a b"], [4, "a c"]]


def test_schedules_keep_prompt_order_and_duplicates():
    out = get_learned_conditioning_prompt_schedules(["x", "a [b:2]", "x"], 4)
    assert out == [[[4, "x"]], [[2, "a "], [4, "a b"]], [[4, "x"]]]


def test_and_splits_with_weights():
    assert split_and("a cat AND a dog :0.5") == [("a cat", 1.0), (" a dog", 0.5)]
    assert split_and("ANDROID robot") == [("ANDROID robot", 1.0)]
    assert split_and("x AND y:-1.5") == [("x", 1.0), (" y", -1.5)]
