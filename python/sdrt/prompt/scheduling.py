"""A1111 prompt editing ``[from:to:when]`` and alternation ``[a|b]`` over sampling steps, and
``AND`` composition.

Semantics of AUTOMATIC1111's modules/prompt_parser.py (v1.6+), get_learned_conditioning_prompt_schedules:
``when`` written with a '.' is a fraction of the steps, otherwise a step number (for a hires pass
the fraction counts from 1.0 and the integer from the base steps); the prompt before the switch is
used while ``step <= when``; alternation picks option ``(step - 1) % n``. A prompt that does not
parse is used unchanged for every step.

A1111 parses the whole prompt with lark's Earley parser, whose cost grows about as the cube of the
number of syntax characters ``[ ] ( ) : |`` (and with the length): tens of milliseconds at 10,
seconds at 100, minutes at a few hundred. sdrt does exactly that, same grammar and same lark parse,
for prompts of at most :data:`WHOLE_PARSE_MAX_SYNTAX` syntax characters and
:data:`WHOLE_PARSE_MAX_CHARS` characters. Beyond, it tells without parsing whether A1111's parse
would fail (:func:`_whole_parse_fails`; then the prompt is used as written, as A1111 does) and
otherwise parses the prompt group by group (:func:`top_level_groups`), which equals A1111 except
where A1111's parser reads a group as literal text (docs/prompt-syntax.md).
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterable, Sequence, Union

import lark

# A1111's grammar, verbatim (modules/prompt_parser.py, schedule_parser)
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

#: Prompts of at most this many syntax characters (unescaped ``[ ] ( ) : |``; "(a:1.1)" counts 3,
#: "[a:b:5]" 4) and at most WHOLE_PARSE_MAX_CHARS characters are parsed whole, exactly as A1111
#: does; others group by group. Worst case measured at the bound (10 brackets, each between spaces,
#: spread over 1,000 characters): 40-50 ms of CPU on the 2-core development box, lark 1.3.1;
#: ordinary prompts of that size ~25 ms. See docs/prompt-syntax.md.
WHOLE_PARSE_MAX_SYNTAX = 10
WHOLE_PARSE_MAX_CHARS = 1000

_SYNTAX = re.compile(r"\\.|([][():|])")


def syntax_characters(prompt: str) -> int:
    """The unescaped ``[ ] ( ) : |`` in `prompt` (what the whole-prompt parse's cost grows with)."""
    return sum(1 for m in _SYNTAX.finditer(prompt) if m.group(1))


@lru_cache(maxsize=1)
def _parser() -> lark.Lark:
    return lark.Lark(_GRAMMAR)  # A1111's construction: Earley, dynamic lexer, ambiguity resolved


# A parsed prompt, compiled from lark's tree to plain tuples (immutable, so it can be cached and
# resolved for any step count): text is a str, ("seq", parts) a concatenation,
# ("sched", before, after, number_text) a prompt edit, ("alt", options) an alternation.
_Node = Union[str, tuple]


def _compile(node) -> _Node:
    if node is None:  # an omitted optional part: [to:when] has no "from", [a|] an empty option
        return ""
    if isinstance(node, lark.Token):
        return str(node)
    if node.data == "scheduled":
        before, after, _, when, _ = node.children
        return ("sched", _compile(before), _compile(after), str(when))
    if node.data == "alternate":
        return ("alt", tuple(_compile(c) for c in node.children))
    parts: list = []
    for child in node.children:
        part = _compile(child)
        if isinstance(part, tuple) and part[0] == "seq":
            items = part[1]
        else:
            items = (part,)
        for item in items:
            if isinstance(item, str) and parts and isinstance(parts[-1], str):
                parts[-1] += item
            elif item != "":
                parts.append(item)
    if not parts:
        return ""
    return parts[0] if len(parts) == 1 else ("seq", tuple(parts))


@lru_cache(maxsize=512)
def _compiled_with(parser, text: str) -> _Node | None:
    try:
        return _compile(parser.parse(text))
    except (lark.exceptions.LarkError, RecursionError):  # does not parse: A1111 uses the text as written
        return None


def _compiled(text: str) -> _Node | None:
    """`text` parsed with A1111's grammar and compiled, or None if it does not parse. Cached: the
    same prompt is scheduled for the base pass, the hires pass and every batch."""
    return _compiled_with(_parser(), text)


def _when(number: str, steps: int, int_offset: int, flt_offset: float, old_rule: bool) -> int:
    """A1111's step for a `when` (CollectSteps.scheduled)."""
    value = float(number)
    if old_rule:
        value = value * steps if value < 1 else value
    elif "." in number:
        value = (value - flt_offset) * steps
    else:
        value = value - int_offset
    # A1111 takes min(steps, int(value)); int() of an overflowing "when" (1e400) raises there, sdrt
    # clamps (past the end). Below -1 every step is past the switch either way.
    return int(max(-1.0, min(float(steps), value)))


def _collect(node: _Node, whens: list[str]) -> bool:
    """Appends every edit's `when` text under `node` to `whens`; True if `node` holds an alternation."""
    if isinstance(node, str):
        return False
    if node[0] == "sched":
        whens.append(node[3])
        alt = _collect(node[1], whens)
        return _collect(node[2], whens) or alt
    alt = node[0] == "alt"
    for child in node[1]:
        alt = _collect(child, whens) or alt
    return alt


def _resolve(node: _Node, step: int, when: dict[str, int]) -> str:
    """The text of `node` in effect at `step` (1-based)."""
    if isinstance(node, str):
        return node
    kind = node[0]
    if kind == "sched":
        return _resolve(node[1] if step <= when[node[3]] else node[2], step, when)
    if kind == "alt":
        options = node[1]
        return _resolve(options[(step - 1) % len(options)], step, when)
    return "".join(_resolve(child, step, when) for child in node[1])


def top_level_groups(prompt: str) -> list[str]:
    """The prompt cut where its ( ) and [ ] nesting returns to zero: each bracket group, and the
    text between groups. A prompt whose brackets do not balance or match is one piece. Beyond
    the whole-parse bound, the groups holding "[" are parsed one by one instead of the whole
    prompt (the others need no parse)."""
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


# what may follow an edit's last ":" ([WHITESPACE] NUMBER [WHITESPACE]; lark's SIGNED_NUMBER)
_NUMBER_PART = re.compile(r"\s*[+-]?(?:[0-9]+[eE][+-]?[0-9]+"
                          r"|(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[0-9]+)\s*")


def _whole_parse_fails(prompt: str) -> bool:
    """Whether A1111's whole-prompt parse of `prompt` fails, without running it (linear time).

    At the top level the grammar takes any of ``[ ] ( ) :`` as literal text, so only two things
    can fail it: a backslash that escapes nothing (last, or before a newline), and a ``|`` that no
    alternation can hold. An alternation is a bracket group matched strictly from its ``[`` to its
    ``]`` (no literal brackets inside), with no ``:`` at its own level and every group inside it a
    valid emphasis ``(p)`` ``(p:p)`` ``[p]``, edit ``[p:p:N]`` ``[p:N]`` or alternation. The
    innermost unmatched bracket around a ``|`` is the only candidate; a closing bracket that does
    not match the innermost open one ends every candidate open before it."""
    i, n = 0, len(prompt)
    # one frame per open bracket: [kind, colons, bars, children_valid, last_colon]
    stack: list[list] = []
    while i < n:
        c = prompt[i]
        if c == "\\":
            if i + 1 >= n or prompt[i + 1] == "\n":
                return True
            i += 2
            continue
        if c in "([":
            stack.append([c, 0, 0, True, -1])
        elif c in ")]":
            if not stack or stack[-1][0] != ("(" if c == ")" else "["):
                if any(frame[2] for frame in stack):  # these | can no longer be closed
                    return True
                stack.clear()
            else:
                kind, colons, bars, children_valid, last_colon = stack.pop()
                if bars and (kind == "(" or colons or not children_valid):
                    return True  # not an alternation, and the only candidate for these |
                if kind == "(":
                    valid = colons <= 1 and children_valid  # (p) or (p:p)
                elif bars:
                    valid = True  # [p|p...]
                else:  # [p], or an edit [p:N] [p:p:N]
                    valid = children_valid and (
                        colons == 0 or (colons <= 2 and _NUMBER_PART.fullmatch(prompt, last_colon + 1, i) is not None))
                if stack:
                    stack[-1][3] = stack[-1][3] and valid
        elif c == ":":
            if stack:
                stack[-1][1] += 1
                stack[-1][4] = i
        elif c == "|":
            if not stack or stack[-1][0] != "[":
                return True
            stack[-1][2] += 1
        i += 1
    return any(frame[2] for frame in stack)


def get_learned_conditioning_prompt_schedules(prompts: Sequence[str], base_steps: int,
                                              hires_steps: int | None = None,
                                              use_old_scheduling: bool = False) -> list[list[list]]:
    """For each prompt, ``[[end_at_step, text], ...]``: the text to use up to and including that step.
    With `hires_steps`, the schedule of the hires pass (A1111's signature and semantics).

    ``get_learned_conditioning_prompt_schedules(["a [b:3]"], 10)[0] == [[3, 'a '], [10, 'a b']]``.
    """
    if hires_steps is None or use_old_scheduling:
        int_offset, flt_offset, steps = 0, 0.0, base_steps
    else:
        int_offset, flt_offset, steps = base_steps, 1.0, hires_steps

    def schedule(prompt: str) -> list[list]:
        if "[" not in prompt:  # nothing to schedule: A1111's text is the prompt, parsed or not
            return [[steps, prompt]]
        if len(prompt) <= WHOLE_PARSE_MAX_CHARS and syntax_characters(prompt) <= WHOLE_PARSE_MAX_SYNTAX:
            pieces = [prompt]  # exactly A1111
        elif _whole_parse_fails(prompt):  # A1111's parse would fail: the prompt as written
            return [[steps, prompt]]
        else:
            pieces = top_level_groups(prompt)
        nodes: list[_Node] = []
        for piece in pieces:
            node = _compiled(piece) if "[" in piece else piece
            if node is None:
                return [[steps, prompt]]
            nodes.append(node)
        try:
            whens: list[str] = []
            alternates = False
            for node in nodes:
                alternates = _collect(node, whens) or alternates
            when = {w: _when(w, steps, int_offset, flt_offset, use_old_scheduling) for w in whens}
            bounds = {steps, *(w for w in when.values() if w >= 1)}
            if alternates:
                bounds.update(range(1, steps + 1))
            return [[b, "".join(_resolve(node, b, when) for node in nodes)] for b in sorted(bounds)]
        except RecursionError:  # nesting deeper than Python's stack: as a prompt that does not parse
            return [[steps, prompt]]

    cache = {p: schedule(p) for p in set(prompts)}
    return [cache[p] for p in prompts]


_AND = re.compile(r"\bAND\b")
# A1111's re_weight (v1.6+): the text may span lines ("(?:\s|.)", not ".")
_WEIGHT = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


def split_and(prompt: str) -> list[tuple[str, float]]:
    """Composable diffusion: ``"a cat AND a dog :0.5"`` -> ``[("a cat", 1.0), (" a dog", 0.5)]``
    (A1111's get_multicond_prompt_list)."""
    parts = []
    for sub in _AND.split(prompt):
        m = _WEIGHT.search(sub)
        text, weight = m.groups() if m else (sub, None)
        parts.append((text, float(weight) if weight is not None else 1.0))
    return parts


def schedule_boundaries(schedules: Iterable[list[list]]) -> list[int]:
    """All steps at which any of the schedules switches text."""
    return sorted({end for sched in schedules for end, _ in sched})
