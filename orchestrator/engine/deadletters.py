"""A dead letter as the store keeps it: the delivery's bytes with what it was.

The committer keeps each dead letter in the store before it publishes it to
``sagawire.deadletter`` (:meth:`~orchestrator.engine.committing.Committer.dead_letter`),
so an operator can list it (``GET /deadletters``) and redrive its original bytes to
its original destination once the cause is fixed. What the message was (its type, its
correlation id, the saga it was for) is read from its headers or its body as far as it
can be: a message dead-lettered because it does not decode keeps empty ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import orjson

from adapters.base import HEADER_MESSAGE_ID, Delivery
from orchestrator.engine.clock import Clock
from orchestrator.language.definition import SagaDefinition
from orchestrator.store.base import DeadLetterRecord, Store

__all__ = ["DeadLetterKeeper", "dead_letter_record", "saga_of"]

_BINARY_PREFIXES = ("ce_", "ce-", "cloudEvents_", "cloudEvents:")


def _attribute(headers: Mapping[str, str], name: str) -> str:
    for prefix in _BINARY_PREFIXES:
        value = headers.get(prefix + name)
        if value:
            return value
    return ""


def saga_of(sagas: Mapping[str, SagaDefinition], event_type: str) -> str:
    """The saga that consumes ``event_type`` (the first, if several do; "" if none)."""
    for name, saga in sagas.items():
        if event_type in saga.events:
            return name
    return ""


def dead_letter_record(
    d: Delivery,
    reason: str,
    kind: str,
    now: float,
    sagas: Mapping[str, SagaDefinition],
    routed_to: tuple[str, str] | None = None,
) -> DeadLetterRecord:
    """The record of dead letter ``d`` (its ``id`` is the store's). ``routed_to`` is the
    ``(saga, correlation id)`` that refused it, when an instance did; else the saga is
    the first that takes its type."""
    headers = d.headers
    message_id = _attribute(headers, "id")
    event_type = _attribute(headers, "type")
    correlation_id = _attribute(headers, "correlationid")
    if not (message_id and event_type and correlation_id):
        try:
            body = orjson.loads(d.body)
        except orjson.JSONDecodeError:
            body = None
        if isinstance(body, dict):
            message_id = message_id or str(body.get("id") or "")
            event_type = event_type or str(body.get("type") or "")
            correlation_id = correlation_id or str(body.get("correlationid") or "")
    # The CloudEvents id first: the inbox marks by it, so a redrive unmarks by it, and
    # the operator knows it from the history and the logs. The broker's id only for a
    # message that has none: a RabbitMQ publisher that sets no message id gets a random
    # one from its client (aiormq), which names nothing else.
    message_id = message_id or headers.get(HEADER_MESSAGE_ID, "")
    event_type = event_type or d.destination
    return DeadLetterRecord(
        id=0,
        message_id=message_id[:1024],
        type=event_type[:1024],
        saga=routed_to[0] if routed_to else saga_of(sagas, event_type),
        correlation_id=(routed_to[1] if routed_to else correlation_id)[:1024],
        destination=d.destination,
        key=d.key,
        body=d.body,
        headers=tuple((str(k), str(v)) for k, v in headers.items()),
        kind=kind,
        reason=reason[:4000],
        at=now,
    )


class DeadLetterKeeper:
    """Writes dead letters to the store, with the time of the engine's clock."""

    def __init__(self, store: Store, sagas: Mapping[str, SagaDefinition], clock: Clock) -> None:
        self.store = store
        self.sagas = sagas
        self.clock = clock

    async def keep(
        self, letters: Sequence[tuple[Delivery, str, str, tuple[str, str] | None]]
    ) -> None:
        """Keep ``(delivery, reason, kind, routed_to)`` dead letters in one store call.
        Raises the store's error (the committer retries while the store is down)."""
        now = self.clock.now()
        await self.store.keep_dead_letters(
            [dead_letter_record(d, r, k, now, self.sagas, to) for d, r, k, to in letters]
        )
