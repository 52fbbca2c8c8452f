"""Beyond the whole-parse bound, prompt editing parsed group by group equals A1111's parse of the
whole prompt (the reference: one lark Earley parse of the full text) on well-formed prompts, and
long prompts of many groups stay fast (the whole parse costs ~ the cube of the bracket count).
Random prompts of the grammar's characters within the bound: test_schedule_parity.py."""
import pytest

from sdrt.prompt import get_learned_conditioning_prompt_schedules as schedules
from sdrt.prompt.scheduling import top_level_groups
from test_schedule_parity import a1111 as whole_parse  # the independent A1111 oracle

GROUPS = ["(a:1.2)", "[b:c:3]", "[d|e]", "(f)", "[g:0.5]", "[h::2]", "[i:(j:1.1):0.4]", "[k [l:m:2]]"]
WORDS = ["x", "y z", ", ", " "]


def test_group_by_group_equals_the_whole_parse_on_well_formed_prompts(rng):
    """Prompts of valid emphasis, edit and alternation groups between plain words, all past the
    bound (so sdrt parses them group by group): the same schedules as one whole-prompt parse."""
    from sdrt.prompt.scheduling import WHOLE_PARSE_MAX_SYNTAX, syntax_characters

    prompts = ["a [b:c:3] (d:1.2) [e|f] (g)", "[a:(b:1.1):0.5] [c [d:e:2]]", "\\[a:b:2\\] [c:d:1] (e) (f:2)"]
    while len(prompts) < 40:
        parts = [GROUPS[i] if k % 2 else WORDS[i % len(WORDS)]
                 for k, i in enumerate(rng.integers(0, len(GROUPS), int(rng.integers(8, 12))))]
        prompt = "".join(parts)
        if syntax_characters(prompt) > WHOLE_PARSE_MAX_SYNTAX:
            prompts.append(prompt)
    for prompt in prompts:
        assert syntax_characters(prompt) > WHOLE_PARSE_MAX_SYNTAX, prompt
        for steps in (7, 20):
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
