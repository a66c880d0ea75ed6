"""Step 1 of the data flow: bytes become items to decide.

A delivery's bytes are decoded into an envelope within the configured limits and routed
to the instance of each saga that consumes its type
(:mod:`orchestrator.engine.correlate`). A delivery is read as

1. a structured CloudEvent (:mod:`schemas.codec`) when its ``content-type`` says so,
   the common case, decided by that one header;
2. else a binary-mode CloudEvent (:mod:`schemas.binary`) when its headers carry the
   CloudEvents attributes (``ce_``, ``ce-``, ``cloudEvents_``, ``cloudEvents:``);
3. else a structured CloudEvent again (senders that set no ``content-type``);
4. else, on a destination some saga declared ``plain``, a plain JSON event
   (:mod:`schemas.plain`).

What cannot be decoded or routed becomes a dead letter with its reason and kind, here,
before anything reads the store. Parked messages and fired timers come back into the
engine through here too, as items.
"""

from __future__ import annotations

from collections.abc import Sequence

from adapters.base import HEADER_CONTENT_TYPE, Delivery
from orchestrator.engine.batch import Batch, Item
from orchestrator.engine.correlate import Routed, Router
from orchestrator.language.definition import SagaDefinition, timer_event
from orchestrator.store.base import InstanceKey, ParkedRecord, TimerRecord
from schemas.binary import binary_prefix, decode_binary, header
from schemas.codec import decode
from schemas.envelope import CONTENT_TYPE, Envelope
from schemas.errors import DefinitionError, LimitError, MessageError
from schemas.limits import Limits
from schemas.plain import Plain

__all__ = ["Intake", "plain_destinations"]


class Intake:
    """Deliveries, parked rows and timer rows in; :class:`Item` objects out."""

    def __init__(self, router: Router, limits: Limits) -> None:
        self.router = router
        self.limits = limits
        self.plain = plain_destinations(list(router.sagas.values()))
        """How to read a message that is no CloudEvent, by destination (event type)."""
        self._serial = 0

    def parse(self, deliveries: list[Delivery]) -> Batch:
        """A new batch of ``deliveries``: its items, and its dead letters."""
        self._serial += 1
        batch = Batch(deliveries=deliveries, serial=self._serial)
        limits = self.limits
        route = self.router.route
        items = batch.items
        dead = batch.dead
        for d in deliveries:
            try:
                if d.headers.get(HEADER_CONTENT_TYPE) == CONTENT_TYPE:
                    env = decode(d.body, limits)
                else:
                    env = self.envelope(d)
            except MessageError as exc:
                dead.append((d, exc.reason, exc.kind))
                continue
            for r in route(env):
                if isinstance(r, Routed):
                    items.append(Item(r, d))
                else:
                    dead.append((d, r.reason, r.kind))
        return batch

    def correlation_of(self, d: Delivery) -> str | None:
        """The correlation id a forwarder partitions ``d`` by: the ``correlationid``
        attribute, else that of the first saga it routes to (one event bound for two
        instances with different ids goes to the first one's partition; the version
        check keeps the other correct). None when it neither decodes nor routes: its
        partition's engine then dead-letters it with the reason, as it would here."""
        try:
            if d.headers.get(HEADER_CONTENT_TYPE) == CONTENT_TYPE:
                env = decode(d.body, self.limits)
            else:
                env = self.envelope(d)
        except MessageError:
            return None
        if env.correlationid:
            return env.correlationid
        for r in self.router.route(env):
            if isinstance(r, Routed):
                return r.correlation_id
        return None

    def envelope(self, d: Delivery) -> Envelope:
        """The envelope of a delivery whose ``content-type`` is not the structured
        CloudEvents one (see the module docstring for the order in which it is tried)."""
        headers, body, limits = d.headers, d.body, self.limits
        content_type = header(headers, HEADER_CONTENT_TYPE)
        if content_type is not None and content_type.lower().startswith("application/cloudevents"):
            return decode(body, limits)  # structured, whatever else the headers say
        if binary_prefix(headers) is not None:
            return decode_binary(headers, body, limits)
        plain = self.plain.get(d.destination)
        if plain is None:
            return decode(body, limits)
        if b'"specversion"' in body:  # else it cannot be a structured CloudEvent
            try:
                return decode(body, limits)
            except LimitError:
                raise
            except MessageError:
                pass
        return plain.envelope(d.destination, headers, body, limits)

    def parked_items(self, parked: list[ParkedRecord]) -> dict[InstanceKey, list[Item]]:
        """Parked messages as items, per instance, in the order read (parked order);
        those of sagas not loaded here, or that no longer decode, are left parked."""
        waiting: dict[InstanceKey, list[Item]] = {}
        for p in parked:
            item = self._from_parked(p)
            if item is not None:
                waiting.setdefault(item.routed.key, []).append(item)
        return waiting

    def _from_parked(self, p: ParkedRecord, late: bool = False) -> Item | None:
        if p.saga not in self.router.sagas:
            return None
        try:
            env = decode(p.body, self.limits)
        except MessageError:
            return None
        for r in self.router.route(env):
            if isinstance(r, Routed) and r.saga.name == p.saga:
                return Item(r, parked=p, late=late)
        return None

    def late_item(self, p: ParkedRecord) -> Item | None:
        """A parked message whose grace period ended, to be decided as a deviation by a
        saga that tracks them (None if it no longer decodes or routes)."""
        return self._from_parked(p, late=True)

    def timer_item(self, t: TimerRecord) -> Item | None:
        """A fired timer as an item (None if its saga is not loaded here)."""
        saga = self.router.sagas.get(t.saga)
        if saga is None:
            return None
        env = Envelope.new(
            timer_event(t.name),
            {},
            id=f"timer:{t.saga}:{t.correlation_id}:{t.name}:{t.due!r}",
            source="sagawire/timer",
            correlationid=t.correlation_id,
        )
        return Item(Routed(saga, None, env, t.correlation_id, {}), timer=t.name)


def plain_destinations(sagas: Sequence[SagaDefinition]) -> dict[str, Plain]:
    """The destinations some saga declared ``plain``, with how to read them. Two sagas
    that consume one event must read it the same way: a message is read once, for all."""
    found: dict[str, tuple[Plain, str]] = {}
    for saga in sagas:
        for spec in saga.events.values():
            if spec.plain is None:
                continue
            seen = found.setdefault(spec.type, (spec.plain, saga.name))
            if seen[0] != spec.plain:
                raise DefinitionError(
                    f"sagas {seen[1]!r} and {saga.name!r} declare plain event {spec.type!r}"
                    f" differently ({seen[0]} and {spec.plain}): a message is read once,"
                    " for every saga; declare the same Plain(...) in both"
                )
    return {t: p for t, (p, _) in found.items()}
