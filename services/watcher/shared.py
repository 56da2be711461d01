"""One object for each distinct value the watcher keeps many equal copies of.

The watcher keeps every Ingress's contributions for as long as the Ingress exists, and most of what
they are made of repeats across Ingresses: a Service backend (`web:80`), a path rule (`/` → `web:80`), a
whole list of rules (every Ingress of one Helm chart). Parsed from JSON, each Ingress brings its own
copies. `Shared.share` returns the instance already kept for an equal value instead (hashable, frozen
values only), so an Ingress costs only what is its own.

Kept instances that nothing else uses any more are dropped by a sweep once the pool has doubled since
the last one, so the pool stays proportional to the values in use, not to every value ever seen. Whether
anything else uses one is read from its reference count (CPython's), which is what makes this cheap: no
weak references (the model's slotted dataclasses cannot have them) and no bookkeeping per user.
"""

from __future__ import annotations

import sys
from collections.abc import Hashable
from typing import Protocol, TypeVar

_T = TypeVar("_T", bound=Hashable)

_POOL_ONLY = 4
"""References to a kept value when only the pool holds it, as `_sweep` counts them: the dict's key and
value, the loop variable, and `sys.getrefcount`'s own argument."""


class Share(Protocol):
    def __call__(self, value: _T, /) -> _T: ...


class Shared:
    def __init__(self, first_sweep: int = 4096) -> None:
        self._kept: dict[Hashable, Hashable] = {}
        self._first_sweep = first_sweep
        self._sweep_at = first_sweep

    def __len__(self) -> int:
        return len(self._kept)

    def share(self, value: _T, /) -> _T:
        """The kept instance equal to `value` (`value` itself, kept from now on, if there is none)."""
        kept = self._kept.setdefault(value, value)
        if len(self._kept) >= self._sweep_at:
            self._sweep()
        return kept  # type: ignore[return-value]  # equal to `value`, so of its type

    def _sweep(self) -> None:
        unused = [value for value in self._kept if sys.getrefcount(value) <= _POOL_ONLY]
        for value in unused:
            del self._kept[value]
        self._sweep_at = max(self._first_sweep, 2 * len(self._kept))
