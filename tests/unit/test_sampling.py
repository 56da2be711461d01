"""Trace sampling: every change up to a rate, a change traced end to end or not at all."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased

from shardgate import telemetry
from shardgate.sampling import DEFAULT_RATE, RateLimited, sampler

from ..clock import ManualClock


def test_the_bucket_starts_full_then_refills_at_the_rate() -> None:
    clock = ManualClock()
    bucket = RateLimited(5, clock)
    assert [bucket.take() for _ in range(6)] == [True] * 5 + [False]
    clock.now += 0.2  # one token's worth
    assert [bucket.take(), bucket.take()] == [True, False]
    clock.now += 60  # a long pause fills the bucket, and no more than full
    assert sum(bucket.take() for _ in range(10)) == 5


def test_changes_slower_than_the_rate_are_all_traced() -> None:
    clock = ManualClock()
    bucket = RateLimited(100, clock)
    taken = []
    for _ in range(1000):
        clock.now += 0.011
        taken.append(bucket.take())
    assert all(taken)


@given(
    rate=st.integers(min_value=1, max_value=200),
    gaps=st.lists(st.floats(min_value=0, max_value=0.5, allow_nan=False), min_size=1, max_size=400),
)
def test_no_window_samples_more_than_its_share_plus_one_bucket(rate: int, gaps: list[float]) -> None:
    clock = ManualClock()
    bucket = RateLimited(rate, clock)
    times = []
    for gap in gaps:
        clock.now += gap
        if bucket.take():
            times.append(clock.now)
    for i, start in enumerate(times):  # every window that starts at a sampled span
        for j in range(i, len(times)):
            span = times[j] - start
            assert j - i + 1 <= rate * span + rate + 1e-6


def test_a_rate_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RateLimited(0)


def _provider(rate: float) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler(rate))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_a_change_is_traced_end_to_end_or_not_at_all() -> None:
    """Roots past the rate are dropped; downstream spans follow the decision their traceparent carries,
    whatever the downstream process's own bucket holds."""
    watcher, watcher_spans = _provider(2)
    compiler, compiler_spans = _provider(1)
    roots = [watcher.get_tracer("w").start_span("watcher.event") for _ in range(3)]
    parents = []
    for root in roots:
        parents.append(telemetry.traceparent(telemetry.trace.set_span_in_context(root)))
        root.end()
    sampled = [int(p.rsplit("-", 1)[1], 16) & 1 == 1 for p in parents]  # the flags' sampled bit
    assert sampled == [True, True, False]
    assert len(watcher_spans.get_finished_spans()) == 2

    tracer = compiler.get_tracer("c")
    for parent in parents:  # the compiler's own bucket (1) would allow one root only
        tracer.start_span("compiler.apply", context=telemetry.context_from(parent)).end()
    applied = compiler_spans.get_finished_spans()
    assert len(applied) == 2
    assert {s.context.trace_id for s in applied} == {r.get_span_context().trace_id for r in roots[:2]}


def test_the_environment_chooses_the_sampler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    monkeypatch.delenv("SHARDGATE_TRACE_RATE", raising=False)
    default = telemetry._sampler_from_env()
    assert isinstance(default, ParentBased)
    assert f"RateLimited{{{DEFAULT_RATE:g}/s}}" in default.get_description()
    monkeypatch.setenv("SHARDGATE_TRACE_RATE", "0")  # every change: the SDK's default
    assert telemetry._sampler_from_env() is None
    monkeypatch.setenv("SHARDGATE_TRACE_RATE", "2.5")
    assert "RateLimited{2.5/s}" in str(telemetry._sampler_from_env().get_description())  # type: ignore[union-attr]
    for bad in ("fast", "-1"):
        monkeypatch.setenv("SHARDGATE_TRACE_RATE", bad)
        with pytest.raises(ValueError, match="SHARDGATE_TRACE_RATE"):
            telemetry._sampler_from_env()
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")  # the SDK's own variable wins
    assert telemetry._sampler_from_env() is None
