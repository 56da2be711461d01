"""OpenTelemetry setup and the two conversions the pipeline needs.

A change's trace context travels as a W3C `traceparent` string: in NATS headers from the watcher to the
compiler, in the change log and notices from the compiler to the pushers, and in the pusher's map from
nonce to change until Envoy ACKs. Export is OTLP over gRPC to whatever the standard OTEL_* variables
name (a collector, Jaeger, or the local stack's receiver); without an endpoint nothing is exported and
spans cost almost nothing. Sampling follows OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG.
"""

from __future__ import annotations

import os

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

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
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
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


def shutdown_tracing() -> None:
    if _provider is not None:
        _provider.force_flush(5000)
        _provider.shutdown()


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def traceparent(ctx: Context | None = None) -> str:
    """The W3C traceparent of the current (or given) span context; "" when nothing is recorded."""
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
