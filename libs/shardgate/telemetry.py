"""OpenTelemetry setup and the two conversions the pipeline needs.

A change's trace context travels as a W3C `traceparent` string: in NATS headers from the watcher to the
compiler, in the change log and notices from the compiler to the pushers, and in the pusher's map from
nonce to change until Envoy ACKs. Export is OTLP over gRPC to whatever the standard OTEL_* variables
name (a collector, Jaeger, or the local stack's receiver); without an endpoint nothing is exported and
spans cost almost nothing. Sampling: up to SHARDGATE_TRACE_RATE new traces a second (default 100; 0
traces every change), each change traced end to end or not at all (`shardgate.sampling`); setting
OTEL_TRACES_SAMPLER (and OTEL_TRACES_SAMPLER_ARG) puts the SDK's own choice in its place.
"""

from __future__ import annotations

import os

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import Sampler
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shardgate import sampling

_PROPAGATOR = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None


def setup_tracing(service_name: str) -> TracerProvider:
    """Install the global tracer provider once per process; export only if an endpoint is configured."""
    global _provider
    if _provider is not None:
        return _provider
    existing = trace.get_tracer_provider()
    if isinstance(existing, TracerProvider):  # installed by the embedding program: the global is set once
        _provider = existing
        return existing
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}), sampler=_sampler_from_env()
    )
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        # Batching keeps export off the hot path; a slow collector drops spans, never changes.
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(), schedule_delay_millis=200))
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def _sampler_from_env() -> Sampler | None:
    """None (the SDK reads OTEL_TRACES_SAMPLER, or traces everything) or the rate-limited sampler."""
    if os.environ.get("OTEL_TRACES_SAMPLER"):
        return None
    raw = os.environ.get("SHARDGATE_TRACE_RATE", "")
    try:
        rate = float(raw) if raw else sampling.DEFAULT_RATE
    except ValueError:
        raise ValueError(f"SHARDGATE_TRACE_RATE must be a number of traces a second, not {raw!r}") from None
    if rate < 0:
        raise ValueError(f"SHARDGATE_TRACE_RATE must be 0 (every change) or more, not {raw!r}")
    return sampling.sampler(rate)


def shutdown_tracing() -> None:
    if _provider is not None:
        _provider.force_flush(5000)
        _provider.shutdown()


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def traceparent(ctx: Context | None = None) -> str:
    """The W3C traceparent of the current (or given) span context; "" when there is no span. A change
    that was not sampled still has one, its flags saying so, so that every later span drops it too."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=ctx)
    return carrier.get("traceparent", "")


def context_from(traceparent_value: str | None) -> Context:
    """A context whose parent is the span named by `traceparent_value` (an empty context if none)."""
    if not traceparent_value:
        return otel_context.Context()
    return _PROPAGATOR.extract({"traceparent": traceparent_value})


def link_to(traceparent_value: str | None) -> trace.Link | None:
    span_context = trace.get_current_span(context_from(traceparent_value)).get_span_context()
    return trace.Link(span_context) if span_context.is_valid else None
