"""A1111's generation-parameters text ("infotext"), stored in PNGs as the `parameters` chunk."""
from __future__ import annotations

import json
import re
from typing import Any, Mapping


def _quote(value: Any) -> str:
    text = str(value)
    # A1111 JSON-quotes values that would break the "k: v, k: v" syntax.
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ",:\n") else text


def infotext_number(v: float):
    """A number as A1111 writes it: 7 for 7.0, 0.5 for 0.5."""
    return int(v) if float(v).is_integer() else float(v)


def params_line(params: Mapping[str, Any]) -> str:
    """``Key: value, ...`` with None values skipped (also extras' "postprocessing" text)."""
    return ", ".join(f"{k}: {_quote(v)}" for k, v in params.items() if v is not None)


def create_infotext(prompt: str, negative_prompt: str, params: Mapping[str, Any]) -> str:
    """``prompt\\nNegative prompt: ...\\nKey: value, ...``; None values are skipped and the negative
    line is left out when empty (A1111 processing.create_infotext)."""
    line = params_line(params)
    negative = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{line}"


_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^(\d+)x(\d+)$")


def parse_infotext(text: str) -> dict[str, str]:
    """The inverse of create_infotext, with A1111's rules (infotext_utils.parse_generation_parameters):
    the last line holds the parameters only if it has at least 3 ``key: value`` pairs; sizes
    ``WxH`` split into ``Key-1`` / ``Key-2``; quoted values are JSON-unquoted. Values stay strings."""
    *lines, last = text.strip().split("\n")
    if len(_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt, negative, in_negative = [], [], False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    out = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in _PARAM.findall(last):
        if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        size = _SIZE.match(value)
        if size:
            out[f"{key}-1"], out[f"{key}-2"] = size.group(1), size.group(2)
        else:
            out[key] = value
    return out
