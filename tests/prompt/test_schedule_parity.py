"""sdrt's get_learned_conditioning_prompt_schedules equals A1111's (modules/prompt_parser.py, v1.6+)
on random prompts within the whole-parse bound (WHOLE_PARSE_MAX_SYNTAX syntax characters,
WHOLE_PARSE_MAX_CHARS characters), with and without a hires pass; beyond the bound the prompt is
parsed group by group (a failing parse told without parsing) and the whole-prompt parse is never run.

The oracle below is written here, independently of sdrt.prompt.scheduling: A1111's grammar text,
parsed by lark as A1111 builds its parser (lark.Lark(grammar): Earley, dynamic lexer, ambiguities
resolved), the `when` of each edit resolved in place by a lark.Visitor and the text at each step
produced by a lark.Transformer of generators, as A1111's collect_steps / at_step do.
"""
import copy
import functools
import random
import re

import lark
import pytest

import sdrt.prompt.scheduling as scheduling
from sdrt.prompt import get_learned_conditioning_prompt_schedules as schedules
from sdrt.prompt.scheduling import WHOLE_PARSE_MAX_CHARS, WHOLE_PARSE_MAX_SYNTAX, split_and

# ---------------------------------------------------------------------------------------------
# The oracle: A1111's whole-prompt algorithm.

A1111_GRAMMAR = r"""
!start: (prompt | /[][():]/+)*
prompt: (emphasized | scheduled | alternate | plain | WHITESPACE)*
!emphasized: "(" prompt ")"
        | "(" prompt ":" prompt ")"
        | "[" prompt "]"
scheduled: "[" [prompt ":"] prompt ":" [WHITESPACE] NUMBER [WHITESPACE] "]"
alternate: "[" prompt ("|" [prompt])+ "]"
WHITESPACE: /\s+/
plain: /([^\\\[\]():|]|\\.)+/
%import common.SIGNED_NUMBER -> NUMBER
"""

_A1111_PARSER = lark.Lark(A1111_GRAMMAR)


@functools.lru_cache(maxsize=1024)
def a1111_parse(prompt):
    """The parse tree, or None where A1111's `schedule_parser.parse` raises (the prompt is then
    used unchanged for every step). Cached: a1111_schedule does not modify it."""
    try:
        return _A1111_PARSER.parse(prompt)
    except lark.exceptions.LarkError:
        return None


class _CollectSteps(lark.Visitor):
    """Replaces each `scheduled` node's NUMBER by its step, and gathers the step boundaries."""

    def __init__(self, steps, int_offset, flt_offset, use_old_scheduling, clamp_overflow):
        self.steps, self.int_offset, self.flt_offset = steps, int_offset, flt_offset
        self.old, self.clamp_overflow = use_old_scheduling, clamp_overflow
        self.found = [steps]

    def scheduled(self, tree):
        text = tree.children[-2]
        value = float(text)
        if self.old:
            value = value * self.steps if value < 1 else value
        elif "." in text:
            value = (value - self.flt_offset) * self.steps
        else:
            value = value - self.int_offset
        if self.clamp_overflow and value in (float("inf"), float("-inf")):
            value = self.steps if value > 0 else -1  # A1111's int(value) raises OverflowError here
        tree.children[-2] = min(self.steps, int(value))
        if tree.children[-2] >= 1:
            self.found.append(tree.children[-2])

    def alternate(self, tree):
        self.found.extend(range(1, self.steps + 1))


def _flatten(x):
    if isinstance(x, str):
        yield x
    else:
        for part in x:
            yield from _flatten(part)


class _AtStep(lark.Transformer):
    """The text in effect at one step, built from generators as A1111's AtStep does."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def scheduled(self, args):
        before, after, _, when, _ = args
        yield (before or ()) if self.step <= when else after

    def alternate(self, args):
        args = ["" if not arg else arg for arg in args]
        yield args[(self.step - 1) % len(args)]

    def start(self, args):
        return "".join(_flatten(args))

    def plain(self, args):
        yield args[0].value

    def __default__(self, data, children, meta):
        for child in children:
            yield child


def a1111_schedule(prompt, tree, base_steps, hires_steps=None, use_old_scheduling=False, clamp_overflow=False):
    """A1111's get_schedule for one prompt, from its parse tree (a1111_parse; not modified)."""
    if hires_steps is None or use_old_scheduling:
        int_offset, flt_offset, steps = 0, 0, base_steps
    else:
        int_offset, flt_offset, steps = base_steps, 1.0, hires_steps
    if tree is None:
        return [[steps, prompt]]
    tree = copy.deepcopy(tree)  # collect_steps rewrites the tree in place
    collect = _CollectSteps(steps, int_offset, flt_offset, use_old_scheduling, clamp_overflow)
    collect.visit(tree)
    return [[t, _AtStep(t).transform(tree)] for t in sorted(set(collect.found))]


def a1111(prompt, base_steps, hires_steps=None, use_old_scheduling=False):
    return a1111_schedule(prompt, a1111_parse(prompt), base_steps, hires_steps, use_old_scheduling)


# ---------------------------------------------------------------------------------------------
# Random prompts from the grammar's characters.

SYNTAX = re.compile(r"\\.|([][():|])")


def syntax_count(prompt):
    return sum(1 for m in SYNTAX.finditer(prompt) if m.group(1))


_SYNTAX_TOKENS = ["[", "[", "[", "]", "]", "]", "(", ")", ":", ":", ":", "|"]
_OTHER_TOKENS = (["a", "b", "x", "cat", "e", "E", "big dog"]                            # letters
                 + ["3", "0.5", "1.2", "12", ".5", "1.", "-1", "+2", "1e1", "0", "7"]      # numbers
                 + [" ", " ", "  ", "\n", "\t", ", "]                                       # spaces
                 + ["\\", "\\(", "\\[", "\\]", "\\:", "\\|", "\\\\", "\\ "]               # backslashes
                 + ["AND", " AND ", "BREAK", " BREAK "])
_GROUP_TOKENS = ["[a:b:3]", "[a|b]", "(a:1.1)", "[x::0.5]", "[:y:2]", "[p|q|]", "[u:v:0.4]", "[[a:b:1]:c:2]",
                 "(b)", "[c]", "[d: 12 ]", "[a:b:1.5]"]


_WORDS = ["masterpiece", "best quality", "a cat", "sitting on a bench", "autumn", "soft light", "8k"]


def random_prompt(rnd, max_syntax, max_chars=WHOLE_PARSE_MAX_CHARS):
    """A prompt of at most `max_syntax` syntax characters and `max_chars` characters; nine in ten
    hold a "[" (without one nothing can be scheduled); one in a hundred is long (ordinary text
    between the tokens, up to `max_chars`)."""
    long_text = rnd.random() < 0.01
    while True:
        target = rnd.randint(1, max_syntax)
        parts = []
        while syntax_count("".join(parts)) < target:
            r = rnd.random()
            if r < 0.45:
                parts.append(rnd.choice(_SYNTAX_TOKENS))
            elif r < 0.55:
                parts.append(rnd.choice(_GROUP_TOKENS))
            else:
                parts.append(rnd.choice(_OTHER_TOKENS))
            if long_text:
                parts.append(", ".join(rnd.choice(_WORDS) for _ in range(rnd.randint(1, 12))) + ", ")
        if rnd.random() < 0.3:
            parts.append(rnd.choice(_OTHER_TOKENS))
        prompt = "".join(parts)[:max_chars]
        if syntax_count(prompt) <= max_syntax and (("[" in prompt) or rnd.random() < 0.1):
            return prompt


def random_steps(rnd):
    base = rnd.randint(1, 16)
    return base, rnd.randint(1, 10), rnd.random() < 0.1


# ---------------------------------------------------------------------------------------------

def _check_random(count, rng):
    seed = int(rng.integers(2**32))
    print(f"prompt seed: {seed}")
    rnd = random.Random(seed)
    stats = {"prompts": 0, "comparisons": 0, "unparsed": 0, "scheduled": 0, "a1111_overflow": 0}
    for _ in range(count):
        prompt = random_prompt(rnd, WHOLE_PARSE_MAX_SYNTAX)
        base, hires, old = random_steps(rnd)
        tree = a1111_parse(prompt)
        stats["prompts"] += 1
        stats["unparsed"] += tree is None
        # sdrt's test for a failing parse, used beyond the bound where lark is not run
        assert scheduling._whole_parse_fails(prompt) == (tree is None), prompt
        for args in ((base, None, False), (base, hires, False), (base, hires, True) if old else None):
            if args is None:
                continue
            try:
                expected = a1111_schedule(prompt, tree, *args)
            except OverflowError:  # a "when" like 1e400: A1111 raises; sdrt clamps it past the end
                stats["a1111_overflow"] += 1
                expected = a1111_schedule(prompt, tree, *args, clamp_overflow=True)
            got = schedules([prompt], *args)[0]
            assert got == expected, (prompt, args)
            stats["comparisons"] += 1
            stats["scheduled"] += len(expected) > 1
    print(stats)
    return stats


@pytest.mark.parametrize("count", [1_000, pytest.param(20_000, marks=pytest.mark.slow)])
def test_random_prompts_below_the_bound_equal_a1111(count, rng):
    """Random prompts, each scheduled with and without a hires pass (one in ten also with the old
    rule). Each prompt costs two lark Earley parses (the oracle's and sdrt's, each shared by the
    prompt's schedules) of ~12 ms CPU each on the 2-core development box, so the 20,000-prompt run
    takes ~9 minutes of CPU (`pytest -m slow`); the default suite runs 1,000 (~30 s)."""
    stats = _check_random(count, rng)
    assert stats["comparisons"] >= 2 * count
    assert stats["prompts"] == count
    # not degenerate: some prompts fail to parse (used as written), many are scheduled
    assert stats["unparsed"] > count // 20 and stats["scheduled"] > count // 4


@pytest.mark.parametrize("prompt,expected", [
    ("a|b [c|d]", [[4, "a|b [c|d]"]]),              # "|" outside brackets: the whole prompt fails
    ("a [b:c:2] \\", [[4, "a [b:c:2] \\"]]),          # a trailing single backslash: fails
    ("(a|b) [c:d:1]", [[4, "(a|b) [c:d:1]"]]),        # "|" in ( ): fails
    ("a [b:c:2] \\\n", [[4, "a [b:c:2] \\\n"]]),      # backslash before a newline escapes nothing
    ("[a:b:2]::", [[4, "[a:b:2]::"]]),                # parses, but A1111's parse keeps the group literal
    ("[u:v:0.4]::", [[4, "[u:v:0.4]::"]]),
    (":[a:b:3]:", [[3, ":a:"], [4, ":b:"]]),           # while this one is an edit
    ("a [b:c:2] \\[", [[2, "a b \\["], [4, "a c \\["]]),     # an escaped bracket is text
])
def test_whole_prompt_examples(prompt, expected):
    """Prompts where A1111's whole-prompt parse fails or reads a group as text (all scheduled by
    the former group-by-group parse), and two that it schedules."""
    assert a1111(prompt, 4) == expected
    assert schedules([prompt], 4)[0] == expected
    assert scheduling.syntax_characters(prompt) <= WHOLE_PARSE_MAX_SYNTAX and len(prompt) <= WHOLE_PARSE_MAX_CHARS


def test_a1111_doctests_with_and_without_hires():
    for prompt, args, expected in [
        ("a [b:.5] c", (10, 10), [[10, "a b c"]]),
        ("a [b:1.5] c", (10, 10), [[5, "a  c"], [10, "a b c"]]),
        ("[fe|||]male", (10,), [[i, "female" if i % 4 == 1 else "male"] for i in range(1, 11)]),
        ("a [b:c:12]", (10, 4), [[2, "a b"], [4, "a c"]]),
        ("a [b:c:1.5]", (10, 4, True), [[1, "a b"], [10, "a c"]]),
    ]:
        assert a1111(prompt, *args) == expected, prompt
        assert schedules([prompt], *args)[0] == expected, prompt


def test_beyond_the_bound_a_group_a1111_reads_as_text_is_scheduled(monkeypatch):
    """The difference docs/prompt-syntax.md states for prompts beyond the bound, shown on a short
    prompt with the bound lowered."""
    monkeypatch.setattr(scheduling, "WHOLE_PARSE_MAX_SYNTAX", 0)
    assert a1111("[a:b:2]::", 4) == [[4, "[a:b:2]::"]]
    assert schedules(["[a:b:2]::"], 4)[0] == [[2, "a::"], [4, "b::"]]
    assert schedules(["a|b [c|d]"], 4)[0] == a1111("a|b [c|d]", 4)  # a failing parse: as A1111


class _Recording:
    """Stands in for scheduling._parser(): records each text sdrt hands to the lark parser."""

    def __init__(self, texts):
        self.texts = texts

    def parse(self, text):
        self.texts.append(text)
        return _A1111_PARSER.parse(text)


def _record_parses(monkeypatch):
    texts = []
    recorder = _Recording(texts)  # a new parser object: sdrt's parse cache is keyed by it
    monkeypatch.setattr(scheduling, "_parser", lambda: recorder)
    return texts


def test_the_bound_decides_whole_or_grouped(monkeypatch):
    texts = _record_parses(monkeypatch)
    at = "[a:b:2]" + " (c)" * ((WHOLE_PARSE_MAX_SYNTAX - 4) // 2) + " [d]" * (WHOLE_PARSE_MAX_SYNTAX % 2)
    assert syntax_count(at) == WHOLE_PARSE_MAX_SYNTAX
    assert schedules([at], 4)[0] == a1111(at, 4)
    assert texts == [at]

    texts.clear()
    beyond = at + " (d)"
    assert syntax_count(beyond) > WHOLE_PARSE_MAX_SYNTAX
    assert schedules([beyond], 4)[0] == a1111(beyond, 4)
    assert texts == ["[a:b:2]"]

    texts.clear()
    longest = "[a:b:2], " + "x" * (WHOLE_PARSE_MAX_CHARS - 9)
    assert len(longest) == WHOLE_PARSE_MAX_CHARS
    assert schedules([longest, longest + "y"], 4) == [a1111(longest, 4), a1111(longest + "y", 4)]
    assert texts == [longest]  # and for the longer one only "[a:b:2]", parsed (and cached) above


def _split_groups(prompt):
    """Top-level balanced bracket groups and the text between (the test's own cut)."""
    pieces, depth, start, i = [], 0, 0, 0
    while i < len(prompt):
        c = prompt[i]
        if c == "\\":
            i += 2
            continue
        if c in "([":
            if depth == 0 and i > start:
                pieces.append(prompt[start:i])
                start = i
            depth += 1
        elif c in ")]":
            depth -= 1
            if depth == 0:
                pieces.append(prompt[start:i + 1])
                start = i + 1
        i += 1
    pieces.append(prompt[start:])
    return [p for p in pieces if p]


def grouped(prompt, base_steps, hires_steps=None):
    """Group-by-group scheduling from the oracle: each "[" group scheduled alone by A1111's
    algorithm, the texts concatenated at every boundary of any group."""
    per_group = [a1111(p, base_steps, hires_steps) if "[" in p else None for p in _split_groups(prompt)]
    steps = base_steps if hires_steps is None else hires_steps
    bounds = sorted({steps} | {end for sched in per_group if sched for end, _ in sched})

    def text_at(piece, sched, step):
        if sched is None:
            return piece
        return next(text for end, text in sched if step <= end)
    return [[b, "".join(text_at(p, s, b) for p, s in zip(_split_groups(prompt), per_group))] for b in bounds]


@pytest.mark.parametrize("prompt", [
    "(masterpiece:1.2), " * 399 + "[cat:dog:10] a|b",      # "|" outside brackets: A1111's parse fails
    "[a:b:5] " * 400 + "\\",                             # so does a trailing backslash
    "[a:b:5] (c|d) " * 200,                                # and "|" in ( )
])
def test_far_beyond_the_bound_a_failing_parse_is_seen_without_parsing(prompt, monkeypatch):
    texts = _record_parses(monkeypatch)
    assert schedules([prompt], 20)[0] == [[20, prompt]]
    assert schedules([prompt], 20, 8)[0] == [[8, prompt]]
    assert texts == []


@pytest.mark.parametrize("prompt", [
    "(masterpiece:1.2), " * 399 + "[cat:dog:10]",
    "[a:b:5] (c) [d|e] " * 134,
    "[x:[y:z:0.7]:0.3], " + "[[p]:q:3] " * 399,
])
def test_far_beyond_the_bound_is_parsed_group_by_group(prompt, monkeypatch):
    """400 groups: A1111's whole-prompt parse would take minutes; sdrt never parses the whole
    prompt, only single groups holding "[", and returns the group-by-group schedule."""
    texts = _record_parses(monkeypatch)
    for args in ((20,), (20, 8)):
        got = schedules([prompt], *args)[0]
        assert got == grouped(prompt, *args)
    assert len(schedules([prompt], 20)[0]) >= 2
    assert texts and all(len(t) <= 20 and t.startswith("[") for t in texts)  # never the whole prompt


def test_and_weights_may_span_lines():
    """A1111's re_weight matches a sub-prompt over several lines."""
    assert split_and("a cat\non a mat :0.5 AND a dog") == [("a cat\non a mat", 0.5), (" a dog", 1.0)]
    assert split_and("a cat AND a dog :0.5") == [("a cat", 1.0), (" a dog", 0.5)]
