"""The CloudEvents a service sends: their ids, their attributes, their bytes on the wire.

Pure functions, no I/O, usable without the rest of the client (a FastStream handler
builds its replies with :func:`reply_event`): what makes a message a correct member
of a saga is here, in one place, and :class:`~orchestrator.client.Publisher` and
:class:`~orchestrator.client.Service` only move what these build.

* A new event gets a random id (:func:`new_id`) unless the caller names one (an order
  id, to publish "order placed" idempotently).
* A reply's id is derived (:func:`reply_id`) from who sends it and the message that
  caused it, never drawn: handling a redelivered command again, after the service
  forgot its first reply, still sends the same id, which sagawire's inbox drops. Two
  services answering the same event get different ids (the inbox of a saga is keyed by
  id alone).
* ``correlationid`` comes from the cause, ``causationid`` is the cause's ``id``, and
  ``traceparent`` / ``tracestate`` come from the active OpenTelemetry span, else from
  the cause (:mod:`orchestrator.client.tracing`).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ValidationError
from pydantic_core import to_json, to_jsonable_python

from adapters.base import HEADER_CONTENT_TYPE, HEADER_MESSAGE_ID, OutgoingMessage
from orchestrator.client import tracing
from schemas.binary import to_binary
from schemas.codec import describe_validation_error, encode
from schemas.envelope import CONTENT_TYPE, Envelope
from schemas.errors import ConfigError, EnvelopeError

__all__ = [
    "Emit",
    "Mode",
    "new_event",
    "new_id",
    "reply_event",
    "reply_id",
    "reply_message",
    "to_message",
]

Mode = Literal["structured", "binary"]
"""CloudEvents content mode: the whole event as JSON in the body (``structured``, what
sagawire itself sends), or ``data`` in the body and the attributes in headers
(``binary``, per the CloudEvents Kafka, AMQP and NATS bindings)."""

_REPLY_NAMESPACE = uuid.UUID("3a0e2b7c-51d4-4c29-8f6e-7265706c7921")
_VARIANT = {c: "89ab"[int(c, 16) & 0x3] for c in "0123456789abcdef"}
_PREFIXES: dict[str, Any] = {}
"""SHA-1 already fed the reply namespace and one sender's source, per source."""
_EXTENSION = re.compile(r"^[a-z0-9]{1,20}$")


@dataclass(slots=True)  # not frozen: built per reply, a frozen __init__ costs 3x
class Emit:
    """One event a handler asks to send: its ``type`` (the destination) and ``data`` (a
    pydantic model or JSON-ready values). ``extensions`` are extra CloudEvents
    attributes (lowercase letters and digits); ``subject`` the CloudEvents subject.
    The service fills in the rest from the message being handled."""

    type: str
    data: Any = None
    subject: str | None = None
    extensions: Mapping[str, str] | None = None


def new_id() -> str:
    """A fresh random event id (UUID 4)."""
    return str(uuid.uuid4())


def reply_id(source: str, cause_source: str, cause_id: str, index: int = 0) -> str:
    """The id of the ``index``-th event that ``source`` sends because of the message
    ``(cause_source, cause_id)``: the same whenever it is computed again.

    ``str(uuid.uuid5(ns, f"{len(source)}:{source}{len(cause_source)}:{cause_source}
    {len(cause_id)}:{cause_id}{index}"))`` with ``ns`` = ``3a0e2b7c-51d4-4c29-8f6e-
    7265706c7921``, so a service in another language can compute it too (lengths keep
    the parts apart whatever they hold). Computed on the digest, without a UUID object:
    it runs once per reply."""
    prefix = _PREFIXES.get(source)
    if prefix is None:
        prefix = _PREFIXES[source] = hashlib.sha1(
            _REPLY_NAMESPACE.bytes + f"{len(source)}:{source}".encode()
        )
    sha = prefix.copy()
    sha.update(f"{len(cause_source)}:{cause_source}{len(cause_id)}:{cause_id}{index}".encode())
    h = sha.hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


def new_event(
    type: str,
    data: Any,
    *,
    source: str,
    id: str | None = None,
    correlationid: str | None = None,
    causationid: str | None = None,
    subject: str | None = None,
    time: datetime | None = None,
    extensions: Mapping[str, str] | None = None,
) -> Envelope:
    """A validated CloudEvent: what :class:`~orchestrator.client.Publisher` publishes.

    ``data`` may be a pydantic model (dumped as JSON) or JSON-ready values. The active
    OpenTelemetry span, if any, becomes ``traceparent`` (and ``tracestate``). An
    attribute sagawire would refuse (an empty type, a bad extension name, a naive
    time) is an :class:`~schemas.errors.EnvelopeError` here, naming it, rather than a
    dead letter later."""
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "id": id or new_id(),
        "source": source,
        "type": type,
        "time": time or datetime.now(UTC),
        "data": data.model_dump(mode="json") if isinstance(data, BaseModel) else data,
    }
    optional = {"correlationid": correlationid, "causationid": causationid, "subject": subject}
    attributes.update({k: v for k, v in optional.items() if v is not None})
    trace = tracing.current()
    if trace is not None:
        attributes.update(trace)
    if extensions:
        attributes.update(extensions)
    try:
        return Envelope.model_validate(attributes)
    except ValidationError as exc:
        raise EnvelopeError(
            f"cannot build a {type!r} event: " + describe_validation_error(exc, "attribute")
        ) from None


def reply_event(cause: Envelope, emit: Emit, *, source: str, index: int = 0) -> Envelope:
    """The event ``source`` sends, ``index``-th, because of ``cause``: ``correlationid``
    copied, ``causationid`` = the cause's id, a derived id (:func:`reply_id`), and the
    active span's trace, else the cause's. Validated like :func:`new_event`."""
    attributes = _reply_attributes(cause, emit, source, index, datetime.now(UTC))
    try:
        return Envelope.model_validate(attributes)
    except ValidationError as exc:
        raise EnvelopeError(
            f"cannot build a {emit.type!r} event: " + describe_validation_error(exc, "attribute")
        ) from None


def reply_message(
    cause: Envelope, emit: Emit, *, source: str, index: int, now: datetime, key: str | None
) -> OutgoingMessage:
    """:func:`reply_event` in structured mode, ready to publish, its bytes written straight
    from a dict (what :func:`schemas.codec.encode` writes, attribute for attribute): the
    service's per-message path, where building and validating an :class:`Envelope` per
    reply would cost more than the rest of the reply. What a dict does not check, the
    type and the extension names, is checked here."""
    if not emit.type:
        raise EnvelopeError("cannot build an event with an empty type")
    attributes = _reply_attributes(cause, emit, source, index, now)
    try:
        body = orjson.dumps(attributes)
    except TypeError:  # an int beyond 64 bits, a type orjson does not know: pydantic's turn
        body = to_json(to_jsonable_python(attributes))
    mid: str = attributes["id"]
    headers = {HEADER_CONTENT_TYPE: CONTENT_TYPE, HEADER_MESSAGE_ID: mid}
    if "traceparent" in attributes:
        _trace_headers(attributes, headers)
    return OutgoingMessage(emit.type, body, mid, key, headers)


def _trace_headers(attributes: Mapping[str, Any], headers: dict[str, str]) -> None:
    """The W3C ``traceparent`` / ``tracestate`` headers too, beside the attributes: a
    consumer's tracing (FastStream's OpenTelemetry middleware, a broker plugin) reads
    the transport's headers, not the event."""
    for name in tracing.ATTRIBUTES:
        value = attributes.get(name)
        if isinstance(value, str):
            headers[name] = value


def _reply_attributes(
    cause: Envelope, emit: Emit, source: str, index: int, now: datetime
) -> dict[str, Any]:
    """The attributes of a reply, in the order :meth:`Envelope.attributes` lists them."""
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "id": reply_id(source, cause.source, cause.id, index),
        "source": source,
        "type": emit.type,
        "time": now,
        "datacontenttype": "application/json",
    }
    if emit.subject is not None:
        attributes["subject"] = emit.subject
    cid = cause.correlationid
    if cid is not None:
        attributes["correlationid"] = cid
    attributes["causationid"] = cause.id
    extensions = emit.extensions
    if extensions:
        for name in extensions:
            if not _EXTENSION.match(name):
                raise EnvelopeError(
                    f"extension attribute {name!r} of a {emit.type!r} event must be 1-20"
                    " lowercase letters or digits"
                )
        attributes.update(extensions)
    if not extensions or "traceparent" not in extensions:
        trace = tracing.current()
        if trace is not None:
            attributes.update(trace)
        else:
            extra = cause.__pydantic_extra__
            if extra and "traceparent" in extra:
                attributes.update(tracing.carried(cause))
    data = emit.data
    attributes["data"] = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
    return attributes


def to_message(
    envelope: Envelope,
    *,
    mode: Mode = "structured",
    key: str | None = None,
    body: bytes | None = None,
) -> OutgoingMessage:
    """``envelope`` ready for :meth:`~adapters.base.Transport.publish`: its id as the broker
    message id (JetStream de-duplicates on it), keyed by ``key`` (default: its
    correlation id, which keeps one saga's messages in one Kafka partition). ``body``:
    the structured bytes if the caller has them already."""
    if key is None:
        key = envelope.correlationid
    if mode == "binary":
        headers, data = binary_mode(envelope)
        headers[HEADER_MESSAGE_ID] = envelope.id
        extra = envelope.__pydantic_extra__
        if extra and "traceparent" in extra:
            _trace_headers(extra, headers)
        return OutgoingMessage(envelope.type, data, envelope.id, key, headers)
    if mode != "structured":
        raise ConfigError(f"unknown CloudEvents mode {mode!r}: 'structured' or 'binary'")
    headers = {HEADER_CONTENT_TYPE: CONTENT_TYPE, HEADER_MESSAGE_ID: envelope.id}
    extra = envelope.__pydantic_extra__
    if extra and "traceparent" in extra:
        _trace_headers(extra, headers)
    return OutgoingMessage(
        envelope.type, body if body is not None else encode(envelope), envelope.id, key, headers
    )


# -- binary content mode ---------------------------------------------------------------


def binary_mode(envelope: Envelope) -> tuple[dict[str, str], bytes]:
    """``envelope`` as (headers, body) in binary content mode, in the neutral form of
    :mod:`schemas.binary` (``ce-`` headers, ``content-type`` the data's media type):
    each adapter renames the headers to its binding's (``ce_`` on Kafka,
    ``cloudEvents_`` on AMQP) when it publishes."""
    body, headers = to_binary(envelope)
    return headers, body
