"""NATS JetStream transport (nats-py): destinations are subjects of one stream.

A destination is its own subject unless ``?subject_prefix=P`` makes it ``P.<destination>``.

URL: ``nats://host:4222?stream=SAGAWIRE`` or ``tls://...``; every option and the
credential sources are listed in :mod:`adapters._nats_options`, and what
:meth:`NatsTransport.declare` creates in :mod:`adapters._nats_topology`.

How messages move, and why:

* **publish** writes every message of a window to the connection in list order,
  then awaits all JetStream publish acks together (one round trip per window, not
  per message; :mod:`adapters._nats_publish`, acks collected by
  :mod:`adapters._nats_acks`). One connection feeding one stream keeps that order in
  the stream, so per-key order holds. If some acks fail for a reason that may pass,
  the call raises and the caller retries the whole list; ``Nats-Msg-Id``
  (``<subject>/<message_id>``) makes JetStream drop the copies that had landed, so a
  retried message may land after later ones of the same call — the only case where
  order can bend. A message the server refuses for good (over ``max_payload``,
  headers over 64 KiB, not a literal subject) is left out and named in a
  :class:`~schemas.errors.PublishRefused` once the others are confirmed.
* **consume** pulls batches of at most ``max_batch`` from a durable consumer per
  group; a background pump per consumer (:mod:`adapters._nats_consumer`) fetches
  the next batch while the caller handles the current one. Memory stays bounded:
  one batch queued per consumer, and JetStream stops handing out messages at
  ``max_ack_pending`` unacked ones.
* **ack/nack** publish one small ack message per delivery (no round trip each),
  then flush once per call; ``?double_ack=true`` waits for the server to confirm
  each ack instead. A lost ack only means a redelivery, which the engine's inbox
  absorbs. Calling ack again after an error is safe: settled deliveries are skipped.
* **Holding** (:mod:`adapters._nats_leases`): whatever is fetched and not yet settled
  gets in-progress acks before ``ack_wait`` runs out, so the engine may hold it for
  minutes without a redelivery or a delivery counted against ``max_deliver``. That
  lets ``ack_wait`` be short (4 s by default): it only bounds how long the messages
  of a process that died (kill -9) wait before another consumer gets them.
* **Connection loss** (:mod:`adapters._nats_link`): nats-py reconnects forever;
  readiness is false meanwhile, the pumps wait and then keep fetching, and a lease
  that lapsed while the connection was down comes back after ``ack_wait``.
  :meth:`close` naks whatever it still holds, so a restart gets it now.
* **Attempts**: JetStream stops redelivering after ``max_deliver`` deliveries, so
  the engine must dead-letter a delivery for which :meth:`is_last_attempt` holds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import nats
import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from adapters._nats_consumer import Fetching
from adapters._nats_errors import declaration_error, is_not_found
from adapters._nats_leases import Leases
from adapters._nats_link import NatsLink
from adapters._nats_options import NatsOptions
from adapters._nats_publish import HEADER_KEY, Publisher, fit_dead_letter
from adapters._nats_topology import (
    ConsumerPlan,
    check_stream,
    consumer_plans,
    missing_subjects,
    new_stream_config,
)
from adapters.base import (
    DEADLETTER,
    Delivery,
    OutgoingMessage,
    Readiness,
    Topology,
    dead_letter_message,
    in_binding,
)
from schemas.binary import NATS
from schemas.errors import TransportError

__all__ = ["HEADER_KEY", "NatsTransport"]

_DECLARE_ATTEMPTS = 5


class NatsTransport:
    """Transport over one NATS connection and one JetStream stream."""

    partitionable = True
    """Carries partitioned mode (:mod:`orchestrator.engine.partitioning`): events are
    published under their type, so replicas need the forwarding hop to own instances."""

    def __init__(self, options: NatsOptions) -> None:
        self.options = options
        self._link = NatsLink(options)
        self._declared: set[Topology] = set()
        self._leases = Leases(options.ack_wait)
        self._keeper: asyncio.Task[None] | None = None
        self._fetching = Fetching(
            self._link.closed,
            self._link.connected,
            self._leases,
            options.fetch_timeout,
            self._link.error,
            self._last_chance,
            self._link.lost,
        )
        self._pumps: set[asyncio.Task[None]] = set()
        self._subs: list[JetStreamContext.PullSubscription] = []
        self._publisher = Publisher(
            stream=options.stream,
            subject_of=self._subject,
            ack_timeout=options.publish_timeout,
            error=self._link.error,
            lock=asyncio.Lock(),
        )

    @classmethod
    def from_url(cls, url: str) -> NatsTransport:
        return cls(NatsOptions.from_url(url))

    @property
    def max_deliver(self) -> int:
        """Deliveries of one message after which JetStream gives up on it."""
        return self.options.max_deliver

    def is_last_attempt(self, delivery: Delivery) -> bool:
        """True when JetStream will not deliver ``delivery`` again: dead-letter it
        instead of nacking, or it stays in the stream unhandled."""
        return delivery.delivery_count >= self.options.max_deliver

    # -- connection (adapters._nats_link) -------------------------------------------

    async def start(self) -> None:
        await self._link.connect()
        self._keeper = asyncio.ensure_future(
            self._leases.keep(self._link.connected, self._link.closed)
        )

    async def close(self) -> None:
        """Stop the pumps, stop listening, nak what we hold, then disconnect."""
        self._link.closed.set()
        await self._fetching.stop(self._pumps)
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
            self._keeper = None
        if self._link.nc is None:
            return
        # Unsubscribe first: a pull request left lingering on the server must not
        # catch the redelivery of what we nak below and strand it until ack_wait.
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        # (with the connection still ours: a message on its last delivery is
        # dead-lettered rather than given back, which needs a publish)
        await self._fetching.nak_quietly(self._leases.held())
        await self._link.disconnect()
        self._subs.clear()

    @property
    def readiness(self) -> Readiness:
        return self._link.readiness

    # -- topology -----------------------------------------------------------------

    async def declare(self, topology: Topology) -> None:
        js = self._link.require_js()
        await self._ensure_stream(js, [self._subject(d) for d in topology.all_destinations])
        for plan in self._plans(topology):
            config = plan.config(
                ack_wait=self.options.ack_wait,
                max_deliver=self.options.max_deliver,
                max_ack_pending=self.options.max_ack_pending,
                deliver=await self._deliver_policy(js, plan.name),
            )
            try:
                await js.add_consumer(self.options.stream, config)
            except nats.errors.Error as exc:
                raise self._declaration_error(exc, f"declare consumer {plan.name!r}") from exc
        self._declared.add(topology)

    async def _deliver_policy(self, js: JetStreamContext, name: str) -> api.DeliverPolicy:
        """``start=new``: a consumer created now begins with the next message; one that
        exists keeps its policy (JetStream cannot change it, and it goes on from where
        it was anyway)."""
        if self.options.start != "new":
            return api.DeliverPolicy.ALL
        try:
            info = await js.consumer_info(self.options.stream, name)
        except nats.errors.Error as exc:
            if is_not_found(exc):
                return api.DeliverPolicy.NEW
            raise self._declaration_error(exc, f"read consumer {name!r}") from exc
        return info.config.deliver_policy or api.DeliverPolicy.ALL

    async def _ensure_stream(self, js: JetStreamContext, subjects: Sequence[str]) -> None:
        """Create the stream, or add the subjects it lacks. Re-reads after an update
        and tries again, because a concurrent update by another sidecar (JetStream
        has no compare-and-set for stream config) may have replaced our list."""
        name = self.options.stream
        last: TransportError | None = None
        for _ in range(_DECLARE_ATTEMPTS):
            try:
                try:
                    info = await js.stream_info(name)
                except nats.errors.Error as exc:
                    if not is_not_found(exc):
                        raise
                    config = new_stream_config(name, subjects, max_age=self.options.max_age)
                    await js.add_stream(config)
                    continue  # re-read: a concurrent creator may have won with other subjects
                check_stream(info.config, self.options.display)
                existing = info.config.subjects or []
                missing = missing_subjects(existing, subjects)
                if not missing:
                    return
                await js.update_stream(info.config.evolve(subjects=[*existing, *missing]))
            except nats.errors.Error as exc:
                last = self._declaration_error(exc, f"declare stream {name!r}")
                # "already in use" is a concurrent creator winning: re-read and merge.
                if not last.retryable and "already in use" not in str(exc):
                    raise last from exc
        raise last or TransportError(
            f"could not add subjects {list(subjects)} to stream {name!r} on "
            f"{self.options.display} after {_DECLARE_ATTEMPTS} attempts (concurrent updates?)",
            retryable=True,
        )

    def _plans(self, topology: Topology) -> list[ConsumerPlan]:
        version = self._link.require_nc().connected_server_version
        multi = (version.major, version.minor) >= (2, 10)
        subjects = tuple(self._subject(d) for d in topology.consumes)
        return consumer_plans(Topology(subjects, group=topology.group), multi_filter=multi)

    def _subject(self, destination: str) -> str:
        """The subject for ``destination`` (see :meth:`NatsOptions.subject`)."""
        return self.options.subject(destination)

    # -- consuming ----------------------------------------------------------------

    async def consume(
        self, topology: Topology, *, max_batch: int = 256
    ) -> AsyncIterator[list[Delivery]]:
        js = self._link.require_js()
        if topology not in self._declared:
            await self.declare(topology)
        subs = []
        for plan in self._plans(topology):
            try:
                sub = await js.pull_subscribe_bind(durable=plan.name, stream=self.options.stream)
            except nats.errors.Error as exc:
                raise self._link.error(exc, f"subscribe to consumer {plan.name!r}") from exc
            subs.append(sub)
        self._subs.extend(subs)
        queue: asyncio.Queue[list[Msg]] = asyncio.Queue(maxsize=len(subs))
        stop = asyncio.Event()

        async def redeclare() -> None:  # the consumer was deleted under a pump
            await self.declare(topology)

        pumps = {
            asyncio.ensure_future(self._fetching.pump(s, queue, max_batch, stop, redeclare))
            for s in subs
        }
        self._pumps |= pumps
        try:
            while (batch := await self._fetching.next(queue)) is not None:
                yield [self._delivery(m) for m in batch]
        finally:
            stop.set()
            await self._fetching.stop(pumps)
            self._pumps -= pumps
            for sub in subs:
                if sub in self._subs:
                    self._subs.remove(sub)
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            await self._fetching.give_back(queue)

    def _delivery(self, msg: Msg) -> Delivery:
        # ``Nats-*`` headers are JetStream's (``Nats-Msg-Id``...): hidden from the
        # engine, or a dead letter copying them would be de-duplicated away.
        headers = {
            k: v for k, v in (msg.headers or {}).items() if not k.lower().startswith("nats-")
        }
        key = headers.pop(HEADER_KEY, None)
        try:
            count = msg.metadata.num_delivered
        except nats.errors.NotJSMessageError:
            count = 1
        return Delivery(
            destination=self.options.destination(msg.subject),
            body=msg.data,
            headers=headers,
            key=key,
            delivery_count=count,
            handle=msg,
            final_attempt=count >= self.options.max_deliver,
        )

    # -- settling -----------------------------------------------------------------

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        msgs = self._held(deliveries)
        try:
            if self.options.double_ack:
                timeout = self.options.publish_timeout
                await asyncio.gather(*(m.ack_sync(timeout=timeout) for m in msgs))
            else:
                for m in msgs:
                    await m.ack()
                await self._flush()
        except nats.errors.Error as exc:
            raise self._link.error(exc, f"ack of {len(msgs)} deliveries") from exc
        finally:
            self._forget(msgs)

    async def nack(self, deliveries: Sequence[Delivery], *, delay: float = 0.0) -> None:
        msgs = self._held(deliveries)
        failed: BaseException | None = None
        try:
            for m in msgs:  # each on its own: one failure must not strand the rest
                try:
                    if not await self._last_chance(m):
                        await m.nak(delay=delay if delay > 0 else None)
                except (nats.errors.Error, TransportError) as exc:
                    failed = failed or exc
            await self._flush()
        except nats.errors.Error as exc:
            failed = failed or exc
        finally:
            self._forget(msgs)
        if isinstance(failed, TransportError):
            raise failed
        if failed is not None:
            raise self._link.error(failed, f"nack of {len(msgs)} deliveries") from failed

    async def _last_chance(self, msg: Msg) -> bool:
        """Dead-letter and ack ``msg`` if JetStream will not deliver it again (a nak on
        its last delivery drops it from the consumer): True if it did so."""
        try:
            count = msg.metadata.num_delivered
        except nats.errors.NotJSMessageError:
            return False
        if count < self.options.max_deliver:
            return False
        delivery = self._delivery(msg)
        limit = self.options.max_deliver
        await self.dead_letter(
            delivery, f"given back on its last delivery ({count} of max_deliver={limit})"
        )
        await msg.ack()
        return True

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        message = dead_letter_message(delivery, reason)
        msg = delivery.handle
        if isinstance(msg, Msg):
            # The original's stream position: stable across redeliveries, so a
            # dead letter repeated after a crash is de-duplicated, yet never equal to
            # another message's id.
            meta = msg.metadata
            dedup = f"{DEADLETTER}/{meta.stream}/{meta.sequence.stream}"
        else:
            dedup = f"{DEADLETTER}/{delivery.destination}/{message.message_id}"
        limit = self._link.require_nc().max_payload
        fitted = fit_dead_letter(message, dedup, max_payload=limit, stream=self.options.stream)
        await self._publish([(fitted, dedup)])

    def _held(self, deliveries: Sequence[Delivery]) -> list[Msg]:
        return [d.handle for d in deliveries if isinstance(d.handle, Msg) and not d.handle.is_acked]

    def _forget(self, msgs: Sequence[Msg]) -> None:
        for m in msgs:
            if m.is_acked:
                self._leases.release(m)

    async def _flush(self) -> None:
        await self._link.require_nc().flush(timeout=max(1, int(self.options.publish_timeout)))

    # -- publishing ---------------------------------------------------------------

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        messages = in_binding(messages, NATS)  # binary mode: ce- headers, ce-datacontenttype
        await self._publish(
            [(m, f"{m.destination}/{m.message_id}" if m.message_id else "") for m in messages]
        )

    async def _publish(self, messages: Sequence[tuple[OutgoingMessage, str]]) -> None:
        await self._publisher.publish(self._link.require_nc(), messages)

    # -- helpers ------------------------------------------------------------------

    def _declaration_error(self, exc: BaseException, doing: str) -> TransportError:
        return declaration_error(exc, doing, self.options.display, self.options.scrub)
