"""How many changes are traced: every one, up to a rate of new traces per second.

A trace costs the pipeline CPU in every service it crosses (spans built, attributes copied, encoded for
export in the batch processor's thread): in a burst of 10,000 new Ingresses on 10,000 on the project's
2-core bench machine, our services used 3.7–4.5 ms of CPU per Ingress with every span recorded and 3.1
with tracing off (docs/BENCHMARKS.md, finding 2). DESIGN.md asks that a trace never be what makes the
pipeline slow, and a trace is for looking at one change: nobody reads ten thousand traces of a burst.

So the watcher, where a change's trace starts, samples its *root* spans with a token bucket: up to
`rate` new traces a second, with a bucket of the same size, so every change is traced while changes
arrive slower than that — the change a user looks at with `shardgate trace` is, unless it came in a
burst past the rate — and a burst costs at most `rate` traces a second. Every other span follows its
parent's decision (`ParentBased`), carried in the traceparent's flags through NATS, the change log,
notices and nonces, so a change is traced end to end or not at all. A rate of 0 traces every change.

Pure: the clock is passed in; no I/O.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

DEFAULT_RATE = 100.0
"""New traces a second, per process that starts them (the watcher). A cluster's steady stream of changes
is a few a second; 100 keeps all of them traced and caps what a burst of thousands costs."""


class RateLimited(Sampler):
    """Sample a root span when the token bucket holds a token: `rate` tokens a second, at most `rate`
    held (a second's worth), starting full."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, not {rate}")
        self.rate = rate
        self._clock = clock
        self._tokens = rate
        self._last = clock()
        self._lock = threading.Lock()  # the batch processor's thread never samples, but others may

    def take(self) -> bool:
        """One token if there is one."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.rate, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if self.take():
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, trace_state)
        return SamplingResult(Decision.DROP, None, trace_state)

    def get_description(self) -> str:
        return f"RateLimited{{{self.rate:g}/s}}"


def sampler(rate: float = DEFAULT_RATE) -> Sampler | None:
    """The sampler for `rate` new traces a second (parent-based); None for 0: every change, the SDK's
    default."""
    if rate == 0:
        return None
    return ParentBased(root=RateLimited(rate))
