"""Weight deltas of the network module types A1111's Lora extension applies.

- LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"):
  ``dW = up @ down``. On convolutions (LoCon, from LyCORIS) ``down`` is a k x k convolution to
  ``rank`` channels and ``up`` a 1 x 1 convolution back; with ``lora_mid`` the k x k kernel is a
  CP-decomposed core between two 1 x 1 convolutions.
- LoHa (FedPara, Hyeon-Woo et al. 2022): ``dW = (w1a @ w1b) * (w2a @ w2b)``, the Hadamard
  product of two low-rank matrices; with ``hada_t1``/``hada_t2`` each factor is rebuilt from a
  CP/Tucker core.
- LoKr (LyCORIS, Yeh et al. 2023, "Navigating Text-To-Image Customization"):
  ``dW = kron(w1, w2)``; each factor is stored full (``lokr_w1``) or low-rank
  (``lokr_w1_a @ lokr_w1_b``), ``w2`` optionally with a CP core ``lokr_t2``.

Every delta is multiplied by ``alpha / rank`` where the type has a rank (LoRA: rows of
``lora_down``; LoHa: rows of ``hada_w1_b``; LoKr: rows of ``lokr_w2_b``, else of
``lokr_w1_b``) and an alpha is stored, else by 1 -- as A1111 computes it. Deltas are float32.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

__all__ = ["NetworkModule", "detect_kind", "missing_params", "rebuild_cp", "rebuild_lora", "rebuild_loha",
           "rebuild_lokr", "KINDS"]

# parameter names per type, as LyCORIS/kohya write them after the module name
KINDS: dict[str, frozenset[str]] = {
    "lora": frozenset({"lora_down.weight", "lora_up.weight", "lora_mid.weight"}),
    "loha": frozenset({"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"}),
    "lokr": frozenset({"lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2"}),
}


def detect_kind(params: set[str]) -> str:
    """The module type from its parameter names (``alpha`` aside); ValueError when none or mixed."""
    kinds = [kind for kind, names in KINDS.items() if params & names]
    if len(kinds) != 1:
        raise ValueError(f"cannot tell the network type from parameters {sorted(params)}")
    return kinds[0]


def missing_params(kind: str, params: set[str]) -> list[str]:
    """Parameters the type needs that are absent (an incomplete module cannot be rebuilt)."""
    if kind == "lora":
        need = [{"lora_down.weight"}, {"lora_up.weight"}]
    elif kind == "loha":
        need = [{"hada_w1_a"}, {"hada_w1_b"}, {"hada_w2_a"}, {"hada_w2_b"}]
    else:
        need = [{"lokr_w1"} if "lokr_w1" in params else {"lokr_w1_a", "lokr_w1_b"},
                {"lokr_w2"} if "lokr_w2" in params else {"lokr_w2_a", "lokr_w2_b"}]
        if "lokr_t2" in params:
            need.append({"lokr_w2_a", "lokr_w2_b"})
    return sorted(set().union(*need) - params)


def rebuild_cp(core: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
    """CP/Tucker rebuild ``dW[p, r, k, l] = sum_ij wa[i, p] core[i, j, k, l] wb[j, r]``
    (LyCORIS stores ``wa`` as (rank, out) and ``wb`` as (rank, in) when a core is present)."""
    return torch.einsum("ip,ijkl,jr->prkl", wa, core, wb.flatten(1))


def _low_rank(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` with ``b``'s trailing kernel dimensions kept: (out, rank) x (rank, in, *k)."""
    return (a.flatten(1) @ b.flatten(1)).reshape(a.shape[0], *b.shape[1:])


def rebuild_lora(up: torch.Tensor, down: torch.Tensor, mid: torch.Tensor | None = None) -> torch.Tensor:
    """LoRA / LoCon: ``up @ down``; with a CP core, 1x1 down -> k x k mid -> 1x1 up."""
    if mid is None:
        return _low_rank(up, down)
    return torch.einsum("or,rskl,si->oikl", up.flatten(1), mid, down.flatten(1))


def rebuild_loha(w1a: torch.Tensor, w1b: torch.Tensor, w2a: torch.Tensor, w2b: torch.Tensor,
                 t1: torch.Tensor | None = None, t2: torch.Tensor | None = None) -> torch.Tensor:
    """LoHa (FedPara): the Hadamard product of two low-rank (or CP) factors."""
    f1 = _low_rank(w1a, w1b) if t1 is None else rebuild_cp(t1, w1a, w1b)
    f2 = _low_rank(w2a, w2b) if t2 is None else rebuild_cp(t2, w2a, w2b)
    if f1.shape != f2.shape:
        raise RuntimeError(f"LoHa factors differ in shape: {tuple(f1.shape)} vs {tuple(f2.shape)}")
    return f1 * f2


def rebuild_lokr(w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """LoKr: ``kron(w1, w2)``; a conv kernel lives in ``w2``, so ``w1`` gets 1x1 kernel dims."""
    if w2.dim() == 4 and w1.dim() == 2:
        w1 = w1[:, :, None, None]
    return torch.kron(w1.contiguous(), w2.contiguous())  # kron views its inputs (einsum output may not be)


@dataclass(frozen=True)
class NetworkModule:
    """One module of a network file: its type, its tensors by parameter name, and alpha.

    ``key`` is the module's name as the file spells it, used in messages.
    """

    key: str
    kind: str
    tensors: Mapping[str, torch.Tensor] = field(repr=False)
    alpha: float | None = None

    @property
    def rank(self) -> int | None:
        """The rank A1111 divides alpha by; None where the type has none (full LoKr factors)."""
        t = self.tensors
        if self.kind == "lora":
            return int(t["lora_down.weight"].shape[0])
        if self.kind == "loha":
            return int(t["hada_w1_b"].shape[0])
        for name in ("lokr_w2_b", "lokr_w1_b"):  # A1111: w2_b's rank wins when both factors are low-rank
            if name in t:
                return int(t[name].shape[0])
        return None

    @property
    def scale(self) -> float:
        rank = self.rank
        return self.alpha / rank if self.alpha is not None and rank else 1.0

    def shape(self) -> tuple[int, ...]:
        """The delta's natural shape, found without computing it (meta tensors); a ValueError
        names the module when its tensors do not fit together."""
        meta = {name: torch.empty(t.shape, device="meta") for name, t in self.tensors.items()}
        try:
            return tuple(self._rebuild(meta).shape)
        except RuntimeError as e:
            raise ValueError(f"{self.kind} tensors of {self.key!r} do not fit together ({e})") from None

    def delta(self, device: torch.device | str | None = None) -> torch.Tensor:
        """``scale * dW`` in float32, in the natural shape (callers reshape to the weight)."""
        f32 = {name: t.to(device=device, dtype=torch.float32) for name, t in self.tensors.items()}
        return self._rebuild(f32) * self.scale

    def _rebuild(self, t: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if self.kind == "lora":
            return rebuild_lora(t["lora_up.weight"], t["lora_down.weight"], t.get("lora_mid.weight"))
        if self.kind == "loha":
            return rebuild_loha(t["hada_w1_a"], t["hada_w1_b"], t["hada_w2_a"], t["hada_w2_b"],
                                t.get("hada_t1"), t.get("hada_t2"))
        w1 = t["lokr_w1"] if "lokr_w1" in t else _low_rank(t["lokr_w1_a"], t["lokr_w1_b"])
        if "lokr_w2" in t:
            w2 = t["lokr_w2"]
        elif "lokr_t2" in t:
            w2 = rebuild_cp(t["lokr_t2"], t["lokr_w2_a"], t["lokr_w2_b"])
        else:
            w2 = _low_rank(t["lokr_w2_a"], t["lokr_w2_b"])
        return rebuild_lokr(w1, w2)
