"""One ``consume()`` of :class:`~adapters.kafka.KafkaTransport`: a group member, its
offsets, its committer and its in-flight window.

Kafka has no per-message ack, so this module builds one on manual commits: the
:class:`~adapters._kafka_offsets.OffsetTracker` says which offsets are safely acked,
a background task commits them (coalesced, never per message), and a rebalance
commits what was acked before the partitions go. Only this module touches the
``AIOKafkaConsumer``; the transport facade stays broker-agnostic in shape.

A pump fetches in the background, one batch ahead of the caller (as the NATS and
RabbitMQ transports do), so the consumer is polled whether or not the caller takes
batches. That matters when the engine holds what it has (its store is down) and
takes nothing for minutes: aiokafka leaves the group after ``max_poll_interval_ms``
without a poll, and the partitions' next owner would deliver again everything the
engine holds. While a batch waits longer than :data:`HOLD_AFTER`, or the in-flight
window is full, every partition is paused and the pump polls every
:data:`POLL_SECONDS` (no records come from a paused partition, and none are lost:
its position stays where it was), which keeps the membership and fetches nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka import errors as kafka_errors

from adapters._kafka_fetch_wait import FetchWait
from adapters._kafka_offsets import OffsetTracker, Ticket
from adapters._kafka_settings import KafkaSettings, translate_error
from adapters._util import Backoff
from adapters.base import Delivery, Topology
from schemas.errors import TransportError

__all__ = ["ConsumerRun"]

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2
"""Longest a fetch waits for records; bounds close() and rewind latency."""
HOLD_AFTER = 1.0
"""Seconds a fetched batch may wait for the caller before every partition is paused
and the pump only polls to stay in the group. Shorter waits (the engine busy with the
previous batch) leave aiokafka's prefetched records alone: pausing drops them."""
COMMIT_EVERY = 0.2
"""Acks arriving within this window share one commit request."""
FINAL_COMMIT_TIMEOUT = 5.0
"""A commit on close/rebalance gives up after this (the broker may be gone)."""


class _Record(Protocol):
    """The fields of aiokafka's ``ConsumerRecord`` this adapter reads."""

    topic: str
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


Report = Callable[[BaseException | None], None]


class ConsumerRun:
    """Consume ``topology.consumes`` as ``topology.group``; see the module docstring."""

    def __init__(
        self,
        settings: KafkaSettings,
        topology: Topology,
        max_batch: int,
        report: Report,
        instance_id: str | None = None,
    ) -> None:
        self._settings = settings
        self._topology = topology
        self._max_batch = max_batch
        self._report = report
        self.tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        """This run's offsets; its tickets identify the run (see KafkaTransport.ack)."""
        self.group = topology.group
        self.instance_id = instance_id
        self.session_ms = settings.session_timeout_ms
        self._consumer = self._new_consumer()
        self.joined = False
        """Set once the group gave this consumer its (possibly empty) assignment: until
        then nothing is being consumed, and readiness says so."""
        self._room = asyncio.Event()
        """Set when the in-flight window or the read-ahead may have room: an ack, a nack,
        the caller taking a batch."""
        self._ready: deque[list[Delivery]] = deque()
        self._ready_since = 0.0
        self._arrived = asyncio.Event()
        self._dirty = asyncio.Event()
        self._closing = False
        self._committer: asyncio.Task[None] | None = None
        self._pump: asyncio.Task[None] | None = None
        self.fetch_wait = FetchWait(settings.fetch_max_wait_ms, settings.busy_fetch_wait_ms)

    async def start(self) -> None:
        await self._start_consumer()
        self._committer = asyncio.create_task(self._commit_loop())
        self._pump = asyncio.create_task(self._fetch_loop())

    def _new_consumer(self) -> AIOKafkaConsumer:
        s = self._settings
        return AIOKafkaConsumer(
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="latest" if s.start == "new" else "earliest",
            session_timeout_ms=self.session_ms,
            heartbeat_interval_ms=s.heartbeat_interval(self.session_ms),
            max_poll_interval_ms=s.max_poll_interval_ms,
            group_instance_id=self.instance_id,
            fetch_max_wait_ms=s.fetch_max_wait_ms,
            **s.client_kwargs(),
        )

    async def _start_consumer(self) -> None:
        topics = [self._settings.topic(d) for d in self._topology.consumes]
        self._consumer.subscribe(topics, listener=_Rebalance(self))
        try:
            await self._consumer.start()
        except Exception as err:
            await self._consumer.stop()
            raise translate_error(err, "consumer start", self._settings.redacted_url) from err
        self.fetch_wait.attach(self._consumer)

    async def _longer_session(self, err: kafka_errors.InvalidSessionTimeoutError) -> None:
        """The broker refused the session as too short (Apache Kafka's
        ``group.min.session.timeout.ms``, 6000 unless lowered): join again with
        ``session_fallback_ms`` if the session was the default, else raise. Nothing was
        assigned yet (the refusal answers the first JoinGroup), so there is nothing to
        commit or hand over: the refused consumer is replaced by a new one."""
        fallback = self._settings.session_fallback_ms
        if fallback is None or fallback <= self.session_ms:
            raise TransportError(
                f"kafka group {self.group} at {self._settings.redacted_url} refused "
                f"session_timeout_ms={self.session_ms} ({err!r}): set ?session_timeout_ms= "
                "within the broker's group.min/max.session.timeout.ms",
                retryable=False,
            ) from err
        log.warning(
            "kafka broker %s refused session_timeout_ms=%d for group %s (below its "
            "group.min.session.timeout.ms); joining with %d. A replica killed with -9 then "
            "hands its partitions over only after %d ms and a rebalance: lower "
            "group.min.session.timeout.ms on the brokers for a faster failover, or set "
            "?session_timeout_ms=%d to choose this",
            self._settings.redacted_url,
            self.session_ms,
            self.group,
            fallback,
            fallback,
            fallback,
        )
        refused, self.session_ms = self._consumer, fallback
        await refused.stop()
        self._consumer = self._new_consumer()
        await self._start_consumer()

    async def batches(self) -> AsyncGenerator[list[Delivery], None]:
        """The pump's batches, in order; ends when :meth:`stop` is called (or raises
        what ended the pump)."""
        try:
            while True:
                pump = self._pump
                # The pump sets _arrived for each batch and once more when it ends, so a
                # plain wait on it is enough (a task and asyncio.wait per batch cost more
                # than the rest of handing a batch over).
                while not self._ready and pump is not None and not pump.done():
                    self._arrived.clear()
                    await self._arrived.wait()
                if not self._ready:
                    if pump is not None and pump.done() and not pump.cancelled():
                        error = pump.exception()
                        if error is not None:
                            raise error
                    return
                batch = self._ready.popleft()
                self._ready_since = asyncio.get_running_loop().time()
                self._room.set()
                yield batch
        finally:
            await self.stop()

    async def _fetch_loop(self) -> None:
        """Fetch, pause and rewind, one batch ahead of the caller, until stopped; see
        the module docstring for why it polls even when nothing is taken."""
        try:
            await self._fetch()
        finally:
            self._arrived.set()  # the caller waiting for a batch learns that none comes

    async def _fetch(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = Backoff()
        window = self._settings.max_in_flight
        # well within max_poll_interval, should one be set that short
        hold_after = min(HOLD_AFTER, self._settings.max_poll_interval_ms / 4000)
        while not self._closing:
            now = loop.time()
            self._rewind(now)
            held = bool(self._ready) and now - self._ready_since >= hold_after
            full = self.tracker.outstanding >= window or held
            self._sync_pauses(full)
            if full or self._ready:  # wait for an ack, a nack or the caller
                self._room.clear()
                # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a
                # cancel that races the event, and the loop would never end.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL_SECONDS):
                        await self._room.wait()
                if not full:
                    continue  # a batch waits for the caller; prefetched records stay
            room = max(1, min(self._max_batch, window - self.tracker.outstanding))
            try:
                records = await self._consumer.getmany(
                    timeout_ms=0 if full else int(POLL_SECONDS * 1000), max_records=room
                )
            except kafka_errors.ConsumerStoppedError:
                return
            except kafka_errors.InvalidSessionTimeoutError as err:
                await self._longer_session(err)
                continue
            except kafka_errors.KafkaError as err:
                self._report(err)
                await asyncio.sleep(backoff.next_delay())
                continue
            backoff.reset()
            self.fetch_wait.observe(bool(records), loop.time())
            if records:
                self._report(None)  # records just came from the broker: it is reachable
            batch = self._deliveries(records)
            if batch:  # (while paused, only a partition assigned meanwhile gives any)
                if not self._ready:
                    self._ready_since = loop.time()
                self._ready.append(batch)
                self._arrived.set()

    def owned(self) -> set[TopicPartition]:
        """The partitions this member holds now: aiokafka's assignment, less what the
        rebalance listener was told to give up. aiokafka keeps reporting the old
        assignment until the next one arrives, so during a rebalance (after the
        revocation, while every member waits for the new assignment) this is empty, as
        it is before the first assignment and once :meth:`stop` began."""
        if self._closing:
            return set()
        return self.tracker.assigned & set(self._consumer.assignment())

    def ack(self, tickets: Sequence[Ticket[TopicPartition]]) -> None:
        moved = [self.tracker.ack(t) for t in tickets]  # every ticket, no short-circuit
        if any(moved):
            self._dirty.set()
        self._room.set()

    def nack(self, tickets: Sequence[Ticket[TopicPartition]], delay: float) -> None:
        due = asyncio.get_running_loop().time() + delay
        for t in tickets:
            self.tracker.nack(t, due)
        self._room.set()

    async def stop(self) -> None:
        """Commit what is acked, leave the group, end :meth:`batches`. Idempotent.
        (A static member, ``instance_id``, does not leave: aiokafka keeps its place
        for its restart, for up to the session timeout.)"""
        if self._closing:
            return
        self._closing = True
        for task in (self._pump, self._committer):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                # what ended the pump is raised by batches(), not here
                await asyncio.gather(task, return_exceptions=True)
        self._arrived.set()
        try:
            async with asyncio.timeout(FINAL_COMMIT_TIMEOUT):
                await self._commit()
        except TimeoutError:
            # Nothing is lost (the store's inbox absorbs the redelivery), but the next
            # owner of these partitions will see already-handled records again: say so.
            log.warning(
                "final offset commit did not finish in %ss; acked records after the"
                " last commit will be redelivered (and ignored as duplicates)",
                FINAL_COMMIT_TIMEOUT,
            )
        await self._consumer.stop()

    # -- internals ----------------------------------------------------------------
    def _deliveries(self, records: dict[TopicPartition, list[_Record]]) -> list[Delivery]:
        batch: list[Delivery] = []
        rewinding = self.tracker.rewinding
        for tp, recs in records.items():
            if tp in rewinding:
                continue  # fetched before a nack paused it; the rewind fetches them again
            for r in recs:
                ticket = self.tracker.accept(tp, r.offset)
                if ticket is not None:
                    batch.append(self._delivery(r, ticket))
        return batch

    def _delivery(self, r: _Record, ticket: Ticket[TopicPartition]) -> Delivery:
        return Delivery(
            destination=self._settings.destination(r.topic),
            body=r.value or b"",
            # a header may have a null value (Kafka allows it): kept as an empty string
            headers={k: "" if v is None else v.decode("utf-8", "replace") for k, v in r.headers},
            key=None if r.key is None else r.key.decode("utf-8", "replace"),
            delivery_count=self.tracker.delivery_count(ticket),
            handle=ticket,
        )

    def _rewind(self, now: float) -> None:
        assigned = self._consumer.assignment()
        for tp, offset in self.tracker.due_rewinds(now).items():
            if tp in assigned:
                self._consumer.seek(tp, offset)

    def _sync_pauses(self, full: bool) -> None:
        """Paused = partitions waiting for a rewind, plus all of them while the window is
        full. Pausing (not just not polling) keeps the group membership alive."""
        assigned = self._consumer.assignment()
        want = (set(assigned) if full else self.tracker.rewinding) & assigned
        paused = self._consumer.paused()
        if want - paused:
            self._consumer.pause(*(want - paused))
        if paused - want:
            self._consumer.resume(*(paused - want))

    async def _commit_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await self._commit()
            await asyncio.sleep(COMMIT_EVERY)

    async def _commit(self) -> None:
        offsets = self.tracker.pending_commits()
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (kafka_errors.CommitFailedError, kafka_errors.IllegalStateError) as err:
            # The group rebalanced: the partitions' new owner resumes from the last
            # commit and redelivers; the engine's inbox absorbs the repeats.
            log.warning(
                "kafka commit for group %s lost to a rebalance: %s", self._topology.group, err
            )
        except kafka_errors.KafkaError as err:
            self._report(err)
            self._dirty.set()
        else:
            self.tracker.mark_committed(offsets)

    async def _revoked(self, revoked: set[TopicPartition]) -> None:
        offsets = self.tracker.revoke(revoked)
        if not offsets:
            return
        try:
            async with asyncio.timeout(FINAL_COMMIT_TIMEOUT):
                await self._consumer.commit(offsets)
        except (TimeoutError, kafka_errors.KafkaError) as err:
            log.warning(
                "kafka commit on revocation failed for group %s (%s); "
                "acked messages will be delivered again",
                self._topology.group,
                translate_error(err, "commit", self._settings.redacted_url),
            )

    async def _pin_new(self, assigned: set[TopicPartition]) -> None:
        """``start=new``: a partition the group never committed starts at its end, and
        that end is committed at once. Without the commit, a partition that got no
        record before this member stopped would start at its end *again* next time,
        skipping what was published meanwhile. Seek and commit name the same offset,
        so nothing after it is skipped and nothing before it is acted on."""
        try:
            async with asyncio.timeout(FINAL_COMMIT_TIMEOUT):
                fresh = [tp for tp in assigned if await self._consumer.committed(tp) is None]
                if not fresh:
                    return
                ends = await self._consumer.end_offsets(fresh)
                for tp, end in ends.items():
                    self._consumer.seek(tp, end)
                await self._consumer.commit(ends)
        except (TimeoutError, kafka_errors.KafkaError) as err:
            # Not fatal: the partitions start at "latest" anyway; the next assignment
            # pins them again.
            log.warning(
                "kafka start=new: could not pin the start of group %s (%s)",
                self._topology.group,
                translate_error(err, "commit", self._settings.redacted_url),
            )


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Commit acked offsets before partitions move; start clean on new ones."""

    def __init__(self, run: ConsumerRun) -> None:
        self._run = run

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._run._revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._run.tracker.assign(assigned)
        if self._run._settings.start == "new":
            await self._run._pin_new(assigned)
        self._run.joined = True
