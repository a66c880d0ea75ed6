"""Step 4's trace context: what a transition sends continues the trace of its cause.

A saga crosses services; the CloudEvents distributed-tracing extension (``traceparent``
and ``tracestate``, W3C Trace Context) lets a tracing backend draw the whole flow as one
trace, if every hop passes it on. Two levels:

- Always, OpenTelemetry or not: the commands and events a transition sends carry the
  trace context of the message that caused it (:func:`continued`). A producer's trace
  reaches the participants through the sidecar unbroken, at the cost of one dict lookup
  per transition when the message carries none.
- With OpenTelemetry enabled (:func:`enable`: the sidecar's ``otel`` setting, the
  ``otel`` extra installed): one span per handled message, a child of the trace the
  message carries (a root when it carries none; a timer's span is a root), with the
  saga, the state after and the correlation id as attributes; what the transition sends
  carries that span, so the participants' spans are its children.

The span is made where the decision becomes its unit of work
(:func:`orchestrator.engine.persist.unit_for`) and ended there: it marks the decision,
not the batch's commit, so nothing waits on it (the tracer provider's span processor
exports it, in the background with a batching one). A decision made again (its batch
met a version conflict) is a second span; only the one that committed sends commands.
With tracing on, a command's ``traceparent`` names a fresh span, so replaying the same
input no longer gives the same bytes; with it off it does.

OpenTelemetry is optional and enabled per process, as its tracer provider is: without
it (``import opentelemetry`` fails) :func:`enable` refuses and :func:`continued` checks
one module-level None.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import structlog

from schemas.errors import ConfigError

if TYPE_CHECKING:
    from orchestrator.engine.correlate import Routed
    from orchestrator.engine.model import Instance

try:  # optional: the ``otel`` extra
    from opentelemetry import trace as _otel_trace
    from opentelemetry.context import Context as _Context
    from opentelemetry.trace import ProxyTracerProvider as _ProxyTracerProvider
    from opentelemetry.trace import SpanKind as _SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # pragma: no cover - exercised where OpenTelemetry is not installed
    _otel_trace = None  # type: ignore[assignment]
    _PROPAGATOR: Any = None
else:
    _PROPAGATOR = TraceContextTextMapPropagator()

__all__ = ["ATTRIBUTES", "available", "carried", "continued", "disable", "enable", "enabled"]

ATTRIBUTES = ("traceparent", "tracestate")
"""The CloudEvents extension attributes (and W3C headers) of a trace context."""

_TRACEPARENT = re.compile(
    r"(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}(-.*)?"
)
"""W3C ``traceparent``: version (not ff), trace id and parent id (not all zeros), flags;
a later version may append fields, version 00 may not (checked in :func:`carried`)."""

log = structlog.get_logger("sagawire.engine")

_tracer: Any = None
"""The OpenTelemetry tracer spans are made with; None: tracing off (the default)."""


def available() -> bool:
    """Whether OpenTelemetry's API can be imported here."""
    return _PROPAGATOR is not None


def enabled() -> bool:
    """Whether handled messages get spans in this process."""
    return _tracer is not None


def enable(provider: Any = None) -> None:
    """Give every handled message a span, made by ``provider`` (an OpenTelemetry
    ``TracerProvider``; by default the process's global one, which
    ``opentelemetry-instrument`` or the application configures with its exporters).
    ConfigError when OpenTelemetry is not installed: tracing asked for and silently not
    done would be found out only when a trace is needed."""
    global _tracer
    if _otel_trace is None:
        raise ConfigError(
            "OpenTelemetry tracing is on (the otel setting) but opentelemetry is not"
            " installed: pip install 'sagawire[otel]', or turn the setting off"
        )
    source = provider if provider is not None else _otel_trace.get_tracer_provider()
    if isinstance(source, _ProxyTracerProvider):  # the API's default: nothing set one
        log.warning(
            "tracing is on but no OpenTelemetry tracer provider is configured: spans are"
            " not recorded (run under opentelemetry-instrument, with an exporter)"
        )
    _tracer = source.get_tracer("sagawire")


def disable() -> None:
    """Stop making spans (trace context is still passed on)."""
    global _tracer
    _tracer = None


def carried(extra: dict[str, Any] | None) -> dict[str, str] | None:
    """The trace context an envelope's extension attributes (its ``__pydantic_extra__``)
    carry: a valid ``traceparent`` and, with it, a ``tracestate`` that is a string.
    None when there is none, or its ``traceparent`` is malformed (W3C: a trace that
    cannot be parsed is not passed on, and neither is its ``tracestate``)."""
    if not extra:
        return None
    parent = extra.get("traceparent")
    if type(parent) is not str:
        return None
    match = _TRACEPARENT.fullmatch(parent)
    if match is None or (match.group(1) and parent.startswith("00")):
        return None
    state = extra.get("tracestate")
    if type(state) is str and state:
        return {"traceparent": parent, "tracestate": state}
    return {"traceparent": parent}


def continued(event: Routed, after: Instance) -> dict[str, str] | None:
    """The trace context what ``event``'s transition (to ``after``) sends carries: the
    span made for it when tracing is on, else the context ``event`` carries. None: none."""
    extra = event.envelope.__pydantic_extra__
    cause = carried(extra) if extra else None
    if _tracer is None:
        return cause
    return _span(_tracer, event, after, cause)


def _span(
    tracer: Any, event: Routed, after: Instance, cause: dict[str, str] | None
) -> dict[str, str] | None:
    """Start and end the span of ``event``'s transition, a child of ``cause`` (else a
    root: never of whatever context happens to be current where the batch is decided),
    and return its trace context."""
    env = event.envelope
    parent = _PROPAGATOR.extract(cause) if cause else _Context()
    attributes: dict[str, str] = {
        "sagawire.saga": after.saga,
        "sagawire.correlation_id": after.correlation_id,
        "sagawire.state": after.state,
        "messaging.message.id": env.id,
    }
    if event.spec is None:  # a timer: no broker, no producer
        kind = _SpanKind.INTERNAL
    else:
        kind = _SpanKind.CONSUMER
        attributes["messaging.destination.name"] = env.type
        attributes["messaging.operation.type"] = "process"
    span = tracer.start_span(
        f"sagawire handle {env.type}", context=parent, kind=kind, attributes=attributes
    )
    try:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=_otel_trace.set_span_in_context(span))
    finally:
        span.end()
    return carrier or None
