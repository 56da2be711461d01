"""What each response on a stream carried, kept by nonce until Envoy answers it.

Envoy answers every response with a request naming its nonce: ACK (no `error_detail`) or NACK. The book
remembers, per type, the resource names and the traces each outstanding nonce carried, so the answer
can end the right traces and a NACK can say exactly what was refused. A request naming a nonce the book
does not hold (an old stream's, or one already answered) carries no new answer; SotW Envoys repeat the
latest nonce on later requests of the type (subscription changes), so "latest" is kept apart from
"outstanding". Envoy answers in order, so answering
nonce N settles every older nonce of that type still outstanding: those are returned as superseded.
The book is bounded per type; a stream whose Envoy never answers cannot grow it without limit.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from dataclasses import dataclass, field

_counter = itertools.count(1)

MAX_OUTSTANDING = 256


@dataclass(slots=True)
class Sent:
    nonce: str
    type_url: str
    versions: dict[str, str]  # resource name -> version sent ("" for a removal)
    traces: dict[str, str]  # traceparent -> unit whose change it carried
    sent_ns: int = field(default_factory=time.time_ns)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.versions)


@dataclass(slots=True)
class Answered:
    sent: Sent
    superseded: list[Sent]


class NonceBook:
    def __init__(self, max_outstanding: int = MAX_OUTSTANDING) -> None:
        self._by_type: dict[str, OrderedDict[str, Sent]] = {}
        self._latest: dict[str, str] = {}
        self._max = max_outstanding

    def issue(self, type_url: str, versions: dict[str, str], traces: dict[str, str]) -> Sent:
        sent = Sent(str(next(_counter)), type_url, versions, traces)
        outstanding = self._by_type.setdefault(type_url, OrderedDict())
        outstanding[sent.nonce] = sent
        self._latest[type_url] = sent.nonce
        while len(outstanding) > self._max:
            outstanding.popitem(last=False)
        return sent

    def awaiting(self, type_url: str, patience_ns: int) -> bool:
        """Whether a response of the type is still unanswered and younger than `patience_ns`."""
        outstanding = self._by_type.get(type_url)
        if not outstanding:
            return False
        newest = next(reversed(outstanding.values()))
        return time.time_ns() - newest.sent_ns < patience_ns

    def latest(self, type_url: str) -> str | None:
        """The last nonce sent for the type, answered or not."""
        return self._latest.get(type_url)

    def answer(self, type_url: str, nonce: str) -> Answered | None:
        """Settle `nonce` (and every older nonce of the type); None if it is not outstanding (stale)."""
        outstanding = self._by_type.get(type_url)
        if outstanding is None or nonce not in outstanding:
            return None
        superseded: list[Sent] = []
        while True:
            _, sent = outstanding.popitem(last=False)
            if sent.nonce == nonce:
                return Answered(sent, superseded)
            superseded.append(sent)

    def outstanding(self, type_url: str) -> int:
        return len(self._by_type.get(type_url, ()))
