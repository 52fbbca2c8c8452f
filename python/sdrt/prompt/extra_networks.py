"""A1111's extra-network tags in prompts (modules/extra_networks.py): ``<lora:name:0.8>``.

Tags ``<type:item:item...>`` are cut out of the prompt before scheduling and tokenizing; each
item list is split into positional and ``key=value`` items. For LoRA
(extensions-builtin/Lora/extra_networks_lora.py): ``<lora:name[:te_weight[:unet_weight]]>``, te
defaulting to 1 and unet to te, overridable by ``te=`` / ``unet=`` items. As in A1111, a batch
activates the networks of its first prompt.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")


@dataclass(frozen=True)
class ExtraNetworkParams:
    items: tuple[str, ...]
    positional: tuple[str, ...] = field(init=False)
    named: dict = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "positional", tuple(i for i in self.items if "=" not in i))
        object.__setattr__(self, "named", dict(i.split("=", 1) for i in self.items if "=" in i))


@dataclass(frozen=True)
class LoraTag:
    name: str
    te_weight: float = 1.0
    unet_weight: float = 1.0


def parse_prompt(prompt: str) -> tuple[str, dict[str, list[ExtraNetworkParams]]]:
    """(prompt without its tags, {network type: [params, ...]})."""
    found: dict[str, list[ExtraNetworkParams]] = {}

    def cut(m: re.Match) -> str:
        found.setdefault(m[1], []).append(ExtraNetworkParams(tuple(m[2].split(":"))))
        return ""
    return EXTRA_NETWORK.sub(cut, prompt), found


def lora_tags(params: list[ExtraNetworkParams]) -> list[LoraTag]:
    """LoRA tags with A1111's weight rules; a weight that is not a number names the tag."""
    tags = []
    for p in params:
        if not p.positional or not p.positional[0].strip():
            raise ValueError(f"prompt: <lora:{':'.join(p.items)}> has no LoRA name")
        name = p.positional[0]
        try:
            te = float(p.named.get("te", p.positional[1] if len(p.positional) > 1 else 1.0))
            unet = float(p.named.get("unet", p.positional[2] if len(p.positional) > 2 else te))
        except ValueError:
            raise ValueError(f"prompt: <lora:{':'.join(p.items)}>: weights must be numbers") from None
        tags.append(LoraTag(name, te, unet))
    return tags
