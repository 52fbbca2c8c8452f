"""A1111 prompt editing ``[from:to:when]`` and alternation ``[a|b]`` over sampling steps, and
``AND`` composition.

Semantics as documented for AUTOMATIC1111's get_learned_conditioning_prompt_schedules (v1.6+):
``when`` written with a '.' is a fraction of the steps, otherwise a step number (for a hires pass
the fraction counts from 1.0 and the integer from the base steps); the prompt before the switch is
used while ``step <= when``; alternation picks option ``(step - 1) % n``. A prompt that does not
parse is used unchanged for every step. The grammar is parsed with lark, as in A1111.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterable, Sequence

import lark

_GRAMMAR = r"""
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


@lru_cache(maxsize=1)
def _parser() -> lark.Lark:
    return lark.Lark(_GRAMMAR)


def _switch_steps(tree: lark.Tree, steps: int, int_offset: int, flt_offset: float, old_rule: bool) -> list[int]:
    """Resolves each `scheduled` node's `when` to a step (in place) and returns the sorted step
    boundaries of the whole prompt."""
    bounds = {steps}
    for node in tree.iter_subtrees():
        if node.data == "scheduled":
            text = str(node.children[-2])
            value = float(text)
            if old_rule:
                value = value * steps if value < 1 else value
            elif "." in text:
                value = (value - flt_offset) * steps
            else:
                value = value - int_offset
            # an overflowing "when" (e.g. 1e400) is past the end: clamp before int() can overflow
            node.children[-2] = int(max(-1.0, min(float(steps), value)))
            if node.children[-2] >= 1:
                bounds.add(node.children[-2])
        elif node.data == "alternate":
            bounds.update(range(1, steps + 1))
    return sorted(bounds)


def top_level_groups(prompt: str) -> list[str]:
    """The prompt cut where its ( ) and [ ] nesting returns to zero: each bracket group, and the
    text between groups. lark's Earley parse of the whole prompt costs about the cube of its
    bracket count (100 "(a:1.1)" groups: 5 s), and a balanced group parses the same alone as in
    the whole, so the groups are parsed one by one (those without "[" need no parse at all). A
    prompt whose brackets do not balance or match is one piece (parsed whole, as A1111 does)."""
    pieces, stack, start, i = [], [], 0, 0
    while i < len(prompt):
        c = prompt[i]
        if c == "\\":
            i += 2
            continue
        if c in "([":
            if not stack and i > start:
                pieces.append(prompt[start:i])
                start = i
            stack.append(")" if c == "(" else "]")
        elif c in ")]":
            if not stack or stack.pop() != c:
                return [prompt]
            if not stack:
                pieces.append(prompt[start:i + 1])
                start = i + 1
        i += 1
    if stack:
        return [prompt]
    if start < len(prompt):
        pieces.append(prompt[start:])
    return pieces


def _text_at(tree, step: int) -> str:
    """The prompt text in effect at `step` (1-based)."""
    out: list[str] = []

    def walk(node) -> None:
        if isinstance(node, lark.Token):
            out.append(str(node))
        elif node is None:
            return
        elif node.data == "scheduled":
            before, after, _, when, _ = node.children
            walk(before if step <= when else after)
        elif node.data == "alternate":
            options = node.children
            walk(options[(step - 1) % len(options)])
        else:
            for child in node.children:
                walk(child)

    walk(tree)
    return "".join(out)


def get_learned_conditioning_prompt_schedules(prompts: Sequence[str], base_steps: int,
                                              hires_steps: int | None = None,
                                              use_old_scheduling: bool = False) -> list[list[list]]:
    """For each prompt, ``[[end_at_step, text], ...]``: the text to use up to and including that step.

    ``get_learned_conditioning_prompt_schedules(["a [b:3]"], 10)[0] == [[3, 'a '], [10, 'a b']]``.
    """
    if hires_steps is None or use_old_scheduling:
        int_offset, flt_offset, steps = 0, 0.0, base_steps
    else:
        int_offset, flt_offset, steps = base_steps, 1.0, hires_steps

    def schedule(prompt: str) -> list[list]:
        pieces = top_level_groups(prompt)
        if not any("[" in p for p in pieces):  # no [ ]: nothing is scheduled, the text is the prompt
            return [[steps, prompt]]
        trees = []
        for piece in pieces:
            if "[" not in piece:
                trees.append(piece)
                continue
            try:
                trees.append(_parser().parse(piece))
            except (lark.exceptions.LarkError, RecursionError):  # does not parse: the text as written
                return [[steps, prompt]]
        bounds = sorted({b for t in trees if not isinstance(t, str)
                         for b in _switch_steps(t, steps, int_offset, flt_offset, use_old_scheduling)})
        return [[b, "".join(t if isinstance(t, str) else _text_at(t, b) for t in trees)] for b in bounds]

    cache = {p: schedule(p) for p in set(prompts)}
    return [cache[p] for p in prompts]


_AND = re.compile(r"\bAND\b")
_WEIGHT = re.compile(r"^(\s*.*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


def split_and(prompt: str) -> list[tuple[str, float]]:
    """Composable diffusion: ``"a cat AND a dog :0.5"`` -> ``[("a cat", 1.0), (" a dog", 0.5)]``."""
    parts = []
    for sub in _AND.split(prompt):
        m = _WEIGHT.search(sub)
        text, weight = m.groups() if m else (sub, None)
        parts.append((text, float(weight) if weight is not None else 1.0))
    return parts


def schedule_boundaries(schedules: Iterable[list[list]]) -> list[int]:
    """All steps at which any of the schedules switches text."""
    return sorted({end for sched in schedules for end, _ in sched})
