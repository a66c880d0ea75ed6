"""Step 4: turn a decision into a unit of work (and back): records, bytes, outbox rows.

The engine's objects (pydantic state, :class:`~orchestrator.engine.model.Meta`,
envelopes) become the store's plain records here and nowhere else.
"""

from __future__ import annotations

import orjson

from adapters.base import HEADER_CONTENT_TYPE, HEADER_MESSAGE_ID, OutgoingMessage
from orchestrator.engine.correlate import Routed
from orchestrator.engine.model import Decision, Instance
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
from schemas.codec import encode
from schemas.envelope import CONTENT_TYPE, Envelope

__all__ = [
    "instance_from_record",
    "outbox_record",
    "outgoing",
    "parked_unit",
    "record_from_instance",
    "send_id",
    "unit_for",
]


def record_from_instance(instance: Instance) -> InstanceRecord:
    return InstanceRecord(
        saga=instance.saga,
        correlation_id=instance.correlation_id,
        state=instance.state,
        status=instance.status._value_,  # .value goes through enum's descriptor
        version=instance.version,
        data=state_json(instance.data),
        meta=orjson.dumps(instance.meta.to_json()),
        created_at=instance.created_at,
        updated_at=instance.updated_at,
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


def send_id(envelope: Envelope) -> str:
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


def outbox_record(envelope: Envelope, key: str | None, now: float) -> OutboxRecord:
    sid = send_id(envelope)
    return OutboxRecord(
        id=sid,
        destination=envelope.type,
        key=key,
        body=encode(envelope),
        headers=((HEADER_CONTENT_TYPE, CONTENT_TYPE), (HEADER_MESSAGE_ID, sid)),
        created_at=now,
    )


def outgoing(row: OutboxRecord) -> OutgoingMessage:
    return OutgoingMessage(
        destination=row.destination,
        body=row.body,
        message_id=row.id,
        key=row.key,
        headers=dict(row.headers),
    )


def unit_for(
    event: Routed,
    decision: Decision,
    now: float,
    fired_timer: str | None = None,
) -> UnitOfWork:
    """The unit of work of an ``applied`` decision (its instance is the next version)."""
    after = decision.instance
    assert after is not None, "only applied decisions have a unit"
    saga, cid = after.saga, after.correlation_id
    env = event.envelope
    messages = decision.messages
    cancelled = [(saga, cid, t.name) for t in decision.timers if t.due is None]
    if fired_timer is not None:
        cancelled.insert(0, (saga, cid, fired_timer))
    outbox = tuple([outbox_record(m, cid, now) for m in messages]) if messages else ()
    return UnitOfWork(
        instance=record_from_instance(after),
        expected_version=after.version - 1,
        inbox=(saga, env.id),
        history=(
            HistoryRecord(
                saga=saga,
                correlation_id=cid,
                seq=after.version,
                message_id=env.id,
                message_type=env.type,
                from_state=decision.from_state,
                to_state=after.state,
                # each send as the broker knows it: ``<type>:<id>``, ``#<attempt>`` after 1
                commands=tuple([f"{o.destination}:{o.id}" for o in outbox]) if outbox else (),
                at=now,
            ),
        ),
        outbox=outbox,
        timers_set=tuple(
            [TimerRecord(saga, cid, t.name, t.due) for t in decision.timers if t.due is not None]
        ),
        timers_cancelled=tuple(cancelled),
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
                body=body,
                parked_at=now,
                expires=now + park_for,
                reason=reason,
            ),
        )
    )
