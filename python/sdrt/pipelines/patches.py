"""Job-scoped model patches: changes to the model (LoRA weights today; ControlNet or motion
modules attached to the UNet later) that hold for one job and are undone when it ends, whether it
succeeds or raises, so the base model is bit-identical afterwards."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Protocol, Sequence


class JobPatch(Protocol):
    name: str               # the parameter or feature it comes from, for errors ("loras")
    needs_weights: bool     # changes torch weights: needs a backend with patchable_weights
    hint: str               # what to do instead on a backend that cannot patch
    infotext: dict          # what the job's infotext records about it

    def apply(self, backend) -> Callable[[], None]:
        """Change the model; returns the function that restores it exactly."""


def can_patch_weights(backend) -> bool:
    return bool(backend.capabilities.patchable_weights)


def check_patchable(name: str, hint: str, backend) -> None:
    """Refuse a weight patch named `name` on a backend that cannot patch weights at run time."""
    if not can_patch_weights(backend):
        raise ValueError(f"{name}: the {backend.name} backend cannot patch model weights at run time"
                         + (f"; {hint}" if hint else ""))


@contextmanager
def applied(patches: Sequence[JobPatch], backend) -> Iterator[None]:
    """Apply `patches` in order for the body of the with-block, then undo them in reverse order.
    Every patch is checked against the backend before any is applied; a failure while applying
    undoes the ones applied before it. An undo that fails does not stop the others."""
    for patch in patches:
        if patch.needs_weights:
            check_patchable(patch.name, patch.hint, backend)
    undo: list[Callable[[], None]] = []
    try:
        for patch in patches:
            undo.append(patch.apply(backend))
        yield
    finally:
        _undo_all(undo)


def _undo_all(undo: list[Callable[[], None]]) -> None:
    error = None
    for restore in reversed(undo):
        try:
            restore()
        except Exception as e:  # keep restoring the rest; report the first failure
            error = error or e
    if error is not None:
        raise error
