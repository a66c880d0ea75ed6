"""Step 4: turn a decision into a unit of work (and back): records, bytes, outbox rows.

The engine's objects (pydantic state, :class:`~orchestrator.engine.model.Meta`,
envelopes) become the store's plain records here and nowhere else.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic_core import to_json

from adapters.base import HEADER_CONTENT_TYPE, HEADER_MESSAGE_ID, Delivery, OutgoingMessage
from orchestrator.engine import tracing
from orchestrator.engine.correlate import Routed
from orchestrator.engine.model import Decision, Instance, Message
from orchestrator.language.definition import SagaDefinition
from orchestrator.language.statedata import state_from_json, state_json
from orchestrator.language.status import Meta, Status
from orchestrator.store.base import (
    HistoryRecord,
    InstanceRecord,
    OutboxRecord,
    ParkedRecord,
    TimerRecord,
    UnitOfWork,
)
from schemas.binary import encode_binary
from schemas.codec import decode, encode
from schemas.envelope import CONTENT_TYPE, Envelope
from schemas.errors import MessageError
from schemas.limits import Limits

__all__ = [
    "encode_message",
    "instance_from_record",
    "outbox_record",
    "outgoing",
    "parked_delivery",
    "parked_unit",
    "record_from_instance",
    "send_id",
    "traced",
    "unit_for",
]


def record_from_instance(instance: Instance) -> InstanceRecord:
    meta = instance.meta
    return InstanceRecord(  # positional: this runs once per transition
        instance.saga,
        instance.correlation_id,
        instance.state,
        instance.status._value_,  # .value goes through enum's descriptor
        instance.version,
        state_json(instance.data),
        orjson.dumps(
            {"attempts": meta.attempts, "failure": meta.failure, "timers": meta.timers}
            if not meta.steps
            else meta.to_json()
        ),
        instance.created_at,
        instance.updated_at,
    )


def instance_from_record(saga: SagaDefinition, record: InstanceRecord) -> Instance:
    return Instance(
        saga=record.saga,
        correlation_id=record.correlation_id,
        state=record.state,
        status=Status(record.status),
        version=record.version,
        data=state_from_json(saga.state_model, record.data),
        meta=Meta.from_json(orjson.loads(record.meta)),
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def send_id(envelope: Message) -> str:
    """The id of one send of ``envelope``: the outbox row's key, JetStream's ``Nats-Msg-Id``
    and the ``sagawire-message-id`` header. A re-sent command keeps its CloudEvents ``id``
    (see :func:`~orchestrator.engine.decide.command_id`), so each attempt after the first gets
    ``<id>#<attempt>`` here: a broker that de-duplicates must not swallow the re-send, and
    the outbox holds each attempt in its own row. The first attempt, and every message
    that is sent once, is its ``id``."""
    attempt = envelope.attempt
    if attempt is None or attempt == 1:
        return envelope.id
    return f"{envelope.id}#{attempt}"


def encode_message(message: Message, trace: dict[str, str] | None = None) -> bytes:
    """Structured-mode JSON bytes of ``message``, as :func:`schemas.codec.encode` writes
    an envelope: orjson, and pydantic's serializer for what orjson cannot write (an
    integer beyond 64 bits, valid JSON and valid for an ``int`` field). ``trace``: the
    trace context it carries (:mod:`orchestrator.engine.tracing`)."""
    attributes = traced(message, trace)
    try:
        return orjson.dumps(attributes)
    except TypeError:
        return to_json(attributes)


def traced(message: Message, trace: dict[str, str] | None) -> dict[str, Any]:
    """``message``'s attributes with the extension attributes of ``trace`` (if any),
    where :meth:`Envelope.attributes` puts extensions: before ``data``."""
    attributes = message.attributes()
    if trace is None:
        return attributes
    data = attributes.pop("data")
    attributes.update(trace)
    attributes["data"] = data
    return attributes


def outbox_record(
    message: Message,
    key: str | None,
    now: float,
    binary: bool = False,
    trace: dict[str, str] | None = None,
) -> OutboxRecord:
    """The outbox row of one send. Structured mode (the default): the CloudEvent as the
    body. ``binary``: CloudEvents binary content mode, ``data`` as the body and each
    attribute in a header of the neutral form (:mod:`schemas.binary`), which the
    transport renames to its broker's binding when it publishes. ``trace``: the trace
    context the message carries (``traceparent``, ``tracestate``), None for none."""
    sid = send_id(message)
    if not binary:
        return OutboxRecord(
            sid,
            message.type,
            key,
            encode_message(message, trace),
            ((HEADER_CONTENT_TYPE, CONTENT_TYPE), (HEADER_MESSAGE_ID, sid)),
            now,
        )
    body, headers = encode_binary(traced(message, trace))
    headers[HEADER_MESSAGE_ID] = sid
    return OutboxRecord(sid, message.type, key, body, tuple(headers.items()), now)


def outgoing(row: OutboxRecord) -> OutgoingMessage:
    return OutgoingMessage(row.destination, row.body, row.id, row.key, dict(row.headers))


def unit_for(
    event: Routed,
    decision: Decision,
    now: float,
    fired_timer: str | None = None,
    binary: bool = False,
) -> UnitOfWork:
    """The unit of work of an ``applied`` decision (its instance is the next version).
    Records are built positionally and in one pass over the timers: this runs once per
    transition. ``binary``: its messages go out in CloudEvents binary content mode. They
    carry the trace context of ``event``, or of its span when tracing is on
    (:func:`orchestrator.engine.tracing.continued`, which makes that span)."""
    after = decision.instance
    assert after is not None, "only applied decisions have a unit"
    saga, cid = after.saga, after.correlation_id
    env = event.envelope
    trace = tracing.continued(event, after)
    messages = decision.messages
    if messages:
        outbox = tuple([outbox_record(m, cid, now, binary, trace) for m in messages])
        # each send as the broker knows it: ``<type>:<id>``, ``#<attempt>`` after 1
        commands = tuple([f"{o.destination}:{o.id}" for o in outbox])
    else:
        outbox = commands = ()
    timers_set: list[TimerRecord] = []
    cancelled: list[tuple[str, str, str]] = (
        [] if fired_timer is None else [(saga, cid, fired_timer)]
    )
    for t in decision.timers:
        if t.due is None:
            cancelled.append((saga, cid, t.name))
        else:
            timers_set.append(TimerRecord(saga, cid, t.name, t.due))
    note = f"deviation {decision.deviation}" if decision.deviation else decision.note
    history = HistoryRecord(
        saga,
        cid,
        after.version,
        env.id,
        env.type,
        decision.from_state,
        after.state,
        commands,
        now,
        note,
    )
    return UnitOfWork(
        record_from_instance(after),
        after.version - 1,
        (saga, env.id),
        (history,),
        outbox,
        tuple(timers_set),
        tuple(cancelled),
    )


def parked_unit(
    event: Routed, body: bytes, destination: str, now: float, reason: str, park_for: float
) -> UnitOfWork:
    return UnitOfWork(
        parked=(
            ParkedRecord(
                saga=event.saga.name,
                correlation_id=event.correlation_id,
                message_id=event.envelope.id,
                destination=destination,
                body=parked_body(event.envelope, body),
                parked_at=now,
                expires=now + park_for,
                reason=reason,
            ),
        )
    )


def parked_body(envelope: Envelope, body: bytes) -> bytes:
    """What a parked row keeps of a delivery: its own bytes when they are the structured
    CloudEvent ``envelope`` came from (the common case), else ``envelope`` encoded in
    structured mode. A binary-mode or plain delivery's headers are not stored, and its
    body alone would no longer decode when the row is read back."""
    if body[:1] == b"{" and b'"specversion"' in body:
        try:
            if decode(body, _UNLIMITED).id == envelope.id:
                return body
        except MessageError:
            pass
    return encode(envelope)


def parked_delivery(p: ParkedRecord) -> Delivery:
    """The delivery a parked row stands for, to dead-letter it: its structured bytes,
    typed, and named by its message id. Without the id, a broker that de-duplicates
    dead letters by it (JetStream) would keep only the first of a destination's."""
    headers = {HEADER_CONTENT_TYPE: CONTENT_TYPE, HEADER_MESSAGE_ID: p.message_id}
    return Delivery(destination=p.destination, body=p.body, headers=headers)


_UNLIMITED = Limits(max_message_bytes=1 << 62, max_attribute_bytes=1 << 62)
"""A delivery that was parked passed the configured limits already."""
