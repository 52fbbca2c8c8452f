"""A1111's emphasis syntax: ``(x)`` x1.1, ``[x]`` /1.1, ``(x:w)``, escapes, BREAK.

Semantics as documented for AUTOMATIC1111's modules/prompt_parser.py (parse_prompt_attention):
brackets left open apply to the end of the prompt, a ``:w)`` with no open round bracket is plain
text, adjacent runs of equal weight merge, and BREAK becomes the marker ``["BREAK", -1]``.
"""
from __future__ import annotations

import re

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1

# One token of emphasis syntax per match; group 1 is the weight of a "(x:w)" closer.
_TOKEN = re.compile(
    r"""\\\(|\\\)|\\\[|\\]|\\\\|\\   # escapes (and a lone backslash)
      |\(|\[                         # openers
      |:\s*([+-]?[.\d]+)\s*\)        # weighted closer
      |\)|]                          # closers
      |[^\\()\[\]:]+                 # plain text
      |:                             # a colon that closes nothing
    """,
    re.X,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_prompt_attention(text: str) -> list[list]:
    """``text`` -> ``[[fragment, weight], ...]``; e.g. ``'an (important) word'`` ->
    ``[['an ', 1.0], ['important', 1.1], [' word', 1.0]]``."""
    res: list[list] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def scale_from(start: int, factor: float) -> None:
        for item in res[start:]:
            item[1] *= factor

    for m in _TOKEN.finditer(text):
        token, weight = m.group(0), m.group(1)
        if token.startswith("\\"):
            res.append([token[1:], 1.0])
        elif token == "(":
            round_open.append(len(res))
        elif token == "[":
            square_open.append(len(res))
        elif weight is not None and round_open:
            scale_from(round_open.pop(), float(weight))
        elif token == ")" and round_open:
            scale_from(round_open.pop(), ROUND_MULTIPLIER)
        elif token == "]" and square_open:
            scale_from(square_open.pop(), SQUARE_MULTIPLIER)
        else:
            for i, part in enumerate(_BREAK.split(token)):
                if i:
                    res.append(["BREAK", -1])
                res.append([part, 1.0])

    for start in round_open:
        scale_from(start, ROUND_MULTIPLIER)
    for start in square_open:
        scale_from(start, SQUARE_MULTIPLIER)
    if not res:
        return [["", 1.0]]
    merged = [res[0]]
    for item in res[1:]:
        if item[1] == merged[-1][1]:
            merged[-1][0] += item[0]
        else:
            merged.append(item)
    return merged
