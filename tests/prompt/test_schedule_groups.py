"""Prompt editing parsed group by group equals A1111's parse of the whole prompt (the reference:
one lark Earley parse of the full text), on random prompts built from the grammar's characters,
and long prompts of many groups stay fast (the whole parse costs ~ the cube of the bracket count)."""
import pytest

from sdrt.prompt import get_learned_conditioning_prompt_schedules as schedules
from sdrt.prompt.scheduling import _parser, _switch_steps, _text_at, top_level_groups

TOKENS = ["a", "b c", " ", "(", ")", "[", "]", ":", "|", "0.5", "3", "1.2", "\\(", "\\[", ", "]


def whole_parse(prompt: str, steps: int) -> list[list]:
    import lark

    try:
        tree = _parser().parse(prompt)
    except lark.exceptions.LarkError:
        return [[steps, prompt]]
    return [[t, _text_at(tree, t)] for t in _switch_steps(tree, steps, 0, 0.0, False)]


def test_group_by_group_equals_the_whole_parse(rng):
    prompts = ["a [b:c:3] (d:1.2) [e|f] g", "[a:(b:1.1):0.5] [c [d:e:2]]", "(a [b:c:2]) x:y [z]", "[a)", "([a:b:2)]",
               "\\[a:b:2\\] [c:d:1]", "a: [b:c:4], (d)"]
    for _ in range(400):
        prompts.append("".join(TOKENS[i] for i in rng.integers(0, len(TOKENS), int(rng.integers(1, 14)))))
    for prompt in prompts:
        for steps in (1, 7, 20):
            assert schedules([prompt], steps)[0] == whole_parse(prompt, steps), (prompt, steps)


def test_groups_split_only_balanced_matching_brackets():
    assert top_level_groups("a (b) [c:d:2] e") == ["a ", "(b)", " ", "[c:d:2]", " e"]
    assert top_level_groups("(a [b:c:1])") == ["(a [b:c:1])"]
    assert top_level_groups("a (b] c") == ["a (b] c"] and top_level_groups("a (b") == ["a (b"]
    assert top_level_groups("\\(a [b:c:1]") == ["\\(a ", "[b:c:1]"]


@pytest.mark.parametrize("prompt", ["(masterpiece:1.2), " * 150 + "[cat:dog:10]", "[a:b:5] " * 150])
def test_many_groups_are_parsed_one_by_one(prompt, monkeypatch):
    """The whole-prompt parse of these takes minutes (measured ~190 s at 400 groups); only the
    small groups holding "[" may reach the parser."""
    import sdrt.prompt.scheduling as scheduling

    parsed = []
    real = scheduling._parser()

    class Recording:
        def parse(self, text):
            parsed.append(text)
            return real.parse(text)
    monkeypatch.setattr(scheduling, "_parser", lambda: Recording())
    out = schedules([prompt], 20)[0]
    assert len(out) == 2 and out[-1][0] == 20 and out[0][1] != out[1][1]
    assert parsed and all(len(text) <= 12 and "[" in text for text in parsed)
