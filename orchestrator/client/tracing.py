"""W3C trace context on the events a service sends, when OpenTelemetry is there.

A saga crosses several services; ``traceparent`` on each event (the CloudEvents
distributed-tracing extension) lets a tracing backend draw the whole flow as one
trace. OpenTelemetry is optional: sagawire does not depend on it, and without it
(``import opentelemetry`` fails) :func:`current` is always None and a reply only
carries on the trace its cause carried. With it, an event sent inside an active span
carries that span, and the service makes the cause's trace the handler's
current context (:func:`attach`), so the spans a handler opens belong to the saga's
trace.
"""

from __future__ import annotations

from typing import Any

from schemas.envelope import Envelope

__all__ = ["ATTRIBUTES", "attach", "available", "carried", "current", "detach"]

ATTRIBUTES = ("traceparent", "tracestate")
"""The CloudEvents attributes (and W3C headers) of a trace context."""

try:  # optional: only the API package, which any instrumented service has
    from opentelemetry import context as _otel_context
    from opentelemetry import trace as _otel_trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # pragma: no cover - exercised where OpenTelemetry is not installed
    _otel_context = None  # type: ignore[assignment]
    _otel_trace = None  # type: ignore[assignment]
    _PROPAGATOR: Any = None
else:
    _PROPAGATOR = TraceContextTextMapPropagator()


def available() -> bool:
    """Whether OpenTelemetry's API can be imported here."""
    return _PROPAGATOR is not None


def current() -> dict[str, str] | None:
    """``traceparent`` (and ``tracestate``) of the active span, or None when there is no
    valid span or no OpenTelemetry."""
    if _PROPAGATOR is None or not _otel_context.get_current():  # no context: no span
        return None
    if not _otel_trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return {k: carrier[k] for k in ATTRIBUTES if k in carrier} or None


def carried(envelope: Envelope) -> dict[str, str]:
    """The trace attributes ``envelope`` carries (empty if none)."""
    extra = envelope.__pydantic_extra__
    if not extra or "traceparent" not in extra:
        return {}
    return {k: extra[k] for k in ATTRIBUTES if isinstance(extra.get(k), str)}


def attach(envelope: Envelope) -> object | None:
    """Make the trace ``envelope`` carries the current context (for the handler, and the
    tasks it starts); the token for :func:`detach`, or None when there is nothing to do
    (no trace carried, or no OpenTelemetry). A plain function pair, not a context
    manager: this runs once per message handled."""
    if _PROPAGATOR is None:
        return None
    trace = carried(envelope)
    if not trace:
        return None
    token: object = _otel_context.attach(_PROPAGATOR.extract(trace))
    return token


def detach(token: object) -> None:
    """Undo :func:`attach`."""
    _otel_context.detach(token)  # type: ignore[arg-type]
