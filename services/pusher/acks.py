"""Envoy's answers at the edge of the pipeline: an ACK ends a change's trace, a NACK is reported.

Every change is one trace, and the span that ends it is `envoy.ack`: one span per trace a response
carried, parented on that change's traceparent, from when the response was sent to when Envoy ACKed
it. A NACK is logged with everything needed to find the bad resource (node, type, nonce, names and
Envoy's own message) and counted; Envoy keeps its last good config, and so does the pusher keep serving.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

from opentelemetry.trace import Status, StatusCode

from shardgate.telemetry import context_from, tracer

from .metrics import ACKED_RESOURCES, NACKS, short_type
from .nonces import Sent

log = logging.getLogger(__name__)
_tracer = tracer("shardgate.pusher")

MAX_NAMES_IN_SPAN = 16


def _bounded(names: tuple[str, ...]) -> list[str]:
    return list(names[:MAX_NAMES_IN_SPAN])


def acked(node_id: str, sent: Sent, shard_of: Callable[[str], int | None], superseded: bool = False) -> None:
    """Count what `sent` carried as ACKed, and end one `envoy.ack` span per trace it carried."""
    ACKED_RESOURCES.labels(short_type(sent.type_url)).inc(len(sent.versions))
    if not sent.traces:
        return
    now = time.time_ns()
    for traceparent, unit in sent.traces.items():
        attributes: dict[str, str | int | bool | list[str]] = {
            "envoy.node_id": node_id,
            "xds.type_url": sent.type_url,
            "xds.nonce": sent.nonce,
            "xds.resource_names": _bounded(sent.names),
            "xds.resource_count": len(sent.names),
            "sg.unit": unit,
        }
        if superseded:
            attributes["xds.superseded"] = True
        shard = shard_of(unit)
        if shard is not None:
            attributes["sg.shard"] = shard
        span = _tracer.start_span(
            "envoy.ack", context=context_from(traceparent), start_time=sent.sent_ns, attributes=attributes
        )
        span.end(end_time=now)


def nacked(node_id: str, sent: Sent, message: str) -> None:
    NACKS.labels(short_type(sent.type_url)).inc()
    log.warning(
        "NACK from node %r: type %s nonce %s resources %s: %s",
        node_id,
        short_type(sent.type_url),
        sent.nonce,
        _bounded(sent.names) + (["..."] if len(sent.names) > MAX_NAMES_IN_SPAN else []),
        message,
    )
    if not sent.traces:
        return
    now = time.time_ns()
    for traceparent, unit in sent.traces.items():
        span = _tracer.start_span(
            "envoy.nack",
            context=context_from(traceparent),
            start_time=sent.sent_ns,
            attributes={
                "envoy.node_id": node_id,
                "xds.type_url": sent.type_url,
                "xds.nonce": sent.nonce,
                "xds.resource_names": _bounded(sent.names),
                "sg.unit": unit,
                "envoy.error": message[:1024],
            },
        )
        span.set_status(Status(StatusCode.ERROR, message[:256]))
        span.end(end_time=now)


def blame(sent: Sent, message: str) -> dict[str, str]:
    """The resources of a refused response that Envoy's message names (name -> version sent).

    Envoy refuses a whole response for one bad resource, and usually names it (a proto dump or
    "cluster(s) <name>: ..."). Only the named ones are held back; if it names none, all are.
    """
    named = {
        name: version
        for name, version in sent.versions.items()
        if re.search(r"(?<![\w./:-])" + re.escape(name) + r"(?![\w./-])", message)
    }
    return named or dict(sent.versions)
