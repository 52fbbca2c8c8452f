"""A1111's generation-parameters text ("infotext"), stored in PNGs as the `parameters` chunk."""
from __future__ import annotations

import json
from typing import Any, Mapping


def _quote(value: Any) -> str:
    text = str(value)
    # A1111 JSON-quotes values that would break the "k: v, k: v" syntax.
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ",:\n") else text


def create_infotext(prompt: str, negative_prompt: str, params: Mapping[str, Any]) -> str:
    """``prompt\\nNegative prompt: ...\\nKey: value, ...``; None values are skipped and the negative
    line is left out when empty (A1111 processing.create_infotext)."""
    line = ", ".join(f"{k}: {_quote(v)}" for k, v in params.items() if v is not None)
    negative = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{line}"
