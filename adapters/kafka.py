"""Kafka transport (aiokafka): topics as destinations, manual commits as acks.

URL and options: see :mod:`adapters._kafka_settings`. How it maps the protocol:

* **Destinations** are topics (``topic_prefix`` + destination); :meth:`declare`
  creates missing ones with the configured partitions and never alters existing
  ones (it warns when one has fewer partitions than configured).
* **Publish** sends every message with its ``key`` (the correlation id) as record
  key, so one saga instance's messages share a partition and keep their order, and
  waits for every ``acks=all`` confirmation; one call's messages are built into one
  record batch per partition (:mod:`adapters._kafka_produce`, which also remembers
  each key's hash), closed when handed over so the sender takes it at once (an
  open batch waits out ``linger_ms``). Messages without a key are not spread one by
  one (aiokafka's default picks a random partition per record, which lets two
  messages published together arrive in either order): all unkeyed messages of
  one :meth:`publish` call to one topic go to the same partition, so they keep
  their order too, and successive calls rotate over the partitions (Kafka's own
  "sticky" partitioning of null keys, KIP-480). aiokafka keeps at most one produce
  request in flight per broker and retries a failed batch before sending the next,
  so per-partition order survives retries even without the idempotent producer
  (which Tansu, our test broker, rejects; turn it on with ``?idempotence=true``).
  A record Kafka would refuse for good (over ``max_message_bytes``, an invalid topic
  name) is left out before sending; a batch the broker refuses (too large, invalid
  topic) is sent again a record at a time to find which it refuses. Either way the
  others are published and the refused ones named in a
  :class:`~schemas.errors.PublishRefused`. Records sent again so may land after later
  ones of the same partition: the only case where order bends.
* **Ack** is a manual offset commit of the contiguous acked prefix of each
  partition, coalesced in the background (:mod:`adapters._kafka_consumer`).
* **Holding**: the consumer keeps polling in the background, with its partitions
  paused while the engine takes nothing, so it stays in its group (aiokafka leaves
  after ``max_poll_interval_ms`` without a poll) and what the engine holds is not
  handed to another member, however long it holds it.
* **Recovery**: a process killed with -9 is dropped from its group after
  ``session_timeout_ms`` (2 s; 6 s on a broker that refuses shorter sessions) and
  the others take its partitions; with ``?instance_id=`` (static membership) a
  restart within that time gets its partitions back with no rebalance. Numbers and
  when to choose which: ``docs/kafka.md``.
* **Ownership**: :meth:`KafkaTransport.owned` names the partitions this replica
  holds now, for ``/readyz`` and metrics.
* **Nack** pauses the partition and, after the delay, seeks back to the nacked
  offset. Kafka cannot redeliver a single message; records after it that were
  already acked or are still held by the engine are skipped on the way forward.
* **Readiness** comes from a cheap, periodic metadata request (no topics) plus
  errors seen by publish and commit; aiokafka reconnects on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka import errors as kafka_errors
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.protocol.metadata import MetadataRequest

from adapters._kafka_consumer import ConsumerRun
from adapters._kafka_offsets import Ticket
from adapters._kafka_produce import (
    KeyPartitioner,
    Sent,
    refusal,
    refused_by_broker,
    send_batches,
)
from adapters._kafka_settings import KafkaSettings, translate_error
from adapters.base import (
    Delivery,
    OutgoingMessage,
    Readiness,
    Topology,
    dead_letter_message,
    in_binding,
)
from schemas.binary import KAFKA
from schemas.errors import PublishRefused, SagawireError, TransportError

__all__ = ["KafkaTransport"]

log = logging.getLogger(__name__)

PROBE_EVERY = 1.0
"""Seconds between health probes while ready (twice as often while not)."""
PROBE_TIMEOUT = 3.0


class KafkaTransport:
    """Transport over Kafka. URL: ``kafka://host:port[,host:port][?options]``."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self._producer: Any = None
        self._runs: list[ConsumerRun] = []
        self._probe: asyncio.Task[None] | None = None
        self._fault: str | None = None
        self._state = "not started"
        self._txn_lock = asyncio.Lock()
        self._unkeyed_turn = itertools.count()
        self._partitioner = KeyPartitioner()

    @classmethod
    def from_url(cls, url: str) -> KafkaTransport:
        return cls(KafkaSettings.from_url(url))

    async def start(self) -> None:
        s = self.settings
        extra: dict[str, Any] = {}
        if s.transactions:
            extra["transactional_id"] = f"sagawire-{uuid.uuid4().hex}"
        producer = AIOKafkaProducer(
            acks="all",
            partitioner=self._partitioner,
            # No linger: every publish hands over complete batches (_kafka_produce closes
            # them), and the engine waits for their acknowledgement before acking.
            linger_ms=0,
            # One engine batch (256 x ~300 B) fits one produce batch per partition;
            # aiokafka's 16 KiB default splits it into many sequential requests
            # (measured on Tansu: relay 13k -> 24k msgs/s).
            max_batch_size=256 * 1024,
            enable_idempotence=s.idempotence,
            **extra,
            **s.client_kwargs(),
        )
        try:
            await producer.start()
        except Exception as err:
            await producer.stop()
            raise translate_error(err, "connect", s.redacted_url) from err
        self._producer = producer
        self._state = "started"
        self._fault = None
        self._probe = asyncio.create_task(self._probe_loop())

    async def close(self) -> None:
        """Commit acked offsets, leave groups (unacked messages go to other members or
        the next start), end every consume iterator, disconnect. Idempotent."""
        if self._state != "started":
            return
        self._state = "closed"
        runs, self._runs = self._runs, []
        for run in runs:
            await run.stop()
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        await self._producer.stop()

    async def declare(self, topology: Topology) -> None:
        s = self.settings
        wanted = {s.topic(d) for d in topology.all_destinations}
        admin = AIOKafkaAdminClient(**s.client_kwargs())
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = sorted(wanted - existing)
            if missing:
                resp = await admin.create_topics(
                    [NewTopic(t, s.partitions, s.replication) for t in missing]
                )
                self._check_created(resp.topic_errors)
            if wanted & existing:
                self._warn_small(await admin.describe_topics(sorted(wanted & existing)))
        except SagawireError:
            raise
        except Exception as err:
            raise translate_error(err, "declare", s.redacted_url) from err
        finally:
            await admin.close()

    async def consume(
        self, topology: Topology, *, max_batch: int = 256
    ) -> AsyncIterator[list[Delivery]]:
        self._require_started()
        run = ConsumerRun(
            self.settings, topology, max_batch, self._observe, self._instance_id(topology.group)
        )
        self._runs.append(run)  # first: a concurrent consume of the group picks another id
        try:
            await run.start()
            async with contextlib.aclosing(run.batches()) as batches:
                async for batch in batches:
                    yield batch
        finally:
            await run.stop()
            with contextlib.suppress(ValueError):
                self._runs.remove(run)

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        self._require_started()
        messages = in_binding(messages, KAFKA)  # binary mode: ce_ headers
        refused: dict[str, str] = {}
        ready: list[OutgoingMessage] = []
        limit = self.settings.max_message_bytes
        for m in messages:
            reason = refusal(self.settings.topic(m.destination), m, limit)
            if reason is None:
                ready.append(m)
            else:
                refused[m.message_id] = reason
        if ready:
            refused |= await self._deliver(ready)
        if refused:
            raise PublishRefused(refused)

    async def _deliver(self, messages: Sequence[OutgoingMessage]) -> dict[str, str]:
        """Send ``messages`` and wait for every batch; the refused ones' reasons. A batch
        the broker refuses for good is sent again a record at a time, since the broker
        names no record; any other failure raises (retryable or not, as translated)."""
        try:
            if self.settings.transactions:
                async with self._txn_lock, self._producer.transaction():
                    sent = await self._send_all(messages)
            else:
                sent = await self._send_all(messages)
            results = await asyncio.gather(*(f for f, _ in sent), return_exceptions=True)
        except Exception as whole:  # a transaction that did not commit, a closed producer
            outcome: list[tuple[Sequence[OutgoingMessage], BaseException]] = [(messages, whole)]
        else:
            outcome = [
                (held, r)
                for (_, held), r in zip(sent, results, strict=True)
                if isinstance(r, BaseException)
            ]
        for _, failure in outcome:  # a failure that may pass wins: the caller retries all
            if refused_by_broker(failure) is None:
                raise self._failed(failure, "publish") from failure
        refused: dict[str, str] = {}
        for held, failure in outcome:
            if len(held) == 1:
                refused[held[0].message_id] = refused_by_broker(failure) or str(failure)
                continue
            for m in held:  # in order: the ones it takes keep their order
                refused |= await self._deliver([m])
        return refused

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        for run, tickets in self._by_run(deliveries).items():
            run.ack(tickets)

    async def nack(self, deliveries: Sequence[Delivery], *, delay: float = 0.0) -> None:
        for run, tickets in self._by_run(deliveries).items():
            run.nack(tickets, delay)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        await self.publish([dead_letter_message(delivery, reason)])

    def owned(self) -> list[str]:
        """The partitions this transport's consumers hold now, as ``topic[partition]``
        (Kafka's topic names, prefix included), sorted by topic then partition number;
        empty when nothing is being consumed. Read-only, for ``/readyz`` and metrics:
        which replica owns what. A partition two groups of this transport both hold is
        named once."""
        held = {(tp.topic, tp.partition) for run in self._runs for tp in run.owned()}
        return [f"{topic}[{partition}]" for topic, partition in sorted(held)]

    @property
    def readiness(self) -> Readiness:
        if self._state != "started":
            return Readiness(False, f"kafka transport {self._state}")
        if self._fault is not None:
            return Readiness(False, self._fault)
        joining = sorted({run.group for run in self._runs if not run.joined})
        if joining:
            return Readiness(False, f"joining kafka consumer group {', '.join(joining)}")
        return Readiness(True)

    # -- internals ----------------------------------------------------------------
    async def _send_all(self, messages: Sequence[OutgoingMessage]) -> list[Sent]:
        """Queue every message in order and return the confirmations to wait for
        together (one per record batch, with its messages: :mod:`adapters._kafka_produce`)."""
        return await send_batches(
            self._producer,
            self._partitioner,
            self.settings.topic,
            self._unkeyed_partition,
            messages,
        )

    async def _unkeyed_partition(self, topic: str) -> int:
        """The next partition, in turn, for one call's unkeyed messages to ``topic``
        (see the module docstring)."""
        partitions = sorted(await self._producer.partitions_for(topic))
        return int(partitions[next(self._unkeyed_turn) % len(partitions)])

    def _instance_id(self, group: str) -> str | None:
        """The static member id for one more consume of ``group``: ``instance_id`` for
        the first, then ``instance_id-2``... (two members of a group must not share
        one; the same order of consumes after a restart finds the same ids)."""
        base = self.settings.instance_id
        if base is None:
            return None
        taken = {run.instance_id for run in self._runs if run.group == group}
        n = 1
        while (candidate := base if n == 1 else f"{base}-{n}") in taken:
            n += 1
        return candidate

    def _by_run(self, deliveries: Sequence[Delivery]) -> dict[ConsumerRun, list[Ticket[Any]]]:
        """Tickets grouped by the consume run that issued them; tickets of runs that
        already ended are dropped (their messages come again from the last commit)."""
        runs = {id(run.tracker): run for run in self._runs}
        grouped: dict[ConsumerRun, list[Ticket[Any]]] = {}
        for d in deliveries:
            ticket = d.handle
            if isinstance(ticket, Ticket) and (run := runs.get(id(ticket.tracker))):
                grouped.setdefault(run, []).append(ticket)
        return grouped

    def _failed(self, err: BaseException, doing: str) -> TransportError:
        error = translate_error(err, doing, self.settings.redacted_url)
        if error.retryable:
            self._observe(err)
        return error

    def _observe(self, err: BaseException | None) -> None:
        """Record the latest evidence about the broker for readiness: an error from a
        probe, publish, fetch or commit, or ``None`` after a probe succeeded or records
        arrived. The most recent evidence wins."""
        if err is None:
            self._fault = None
        else:
            self._fault = f"kafka broker {self.settings.redacted_url} unreachable: {err!r}"

    async def _probe_loop(self) -> None:
        """Ask a broker for metadata about no topics: one tiny round trip that fails
        fast when the connection is gone, whatever aiokafka is retrying meanwhile."""
        client = self._producer.client
        while True:
            await asyncio.sleep(PROBE_EVERY if self._fault is None else PROBE_EVERY / 2)
            try:
                node = client.get_random_node()
                if node is None:
                    raise kafka_errors.KafkaConnectionError("no broker known")
                async with asyncio.timeout(PROBE_TIMEOUT):
                    await client.send(node, MetadataRequest([]))
            except (TimeoutError, OSError, kafka_errors.KafkaError) as err:
                if self._fault is None:
                    log.warning("kafka broker %s unreachable: %r", self.settings.redacted_url, err)
                self._observe(err)
            else:
                self._observe(None)

    def _check_created(self, topic_errors: Sequence[Sequence[Any]]) -> None:
        """Raise for the first topic the broker refused (already existing is fine: a
        concurrent sidecar won the race)."""
        for entry in topic_errors:
            topic, code = entry[0], entry[1]
            if code not in (0, kafka_errors.TopicAlreadyExistsError.errno):
                err = kafka_errors.for_code(code)(entry[-1])
                raise translate_error(err, f"create topic {topic!r}", self.settings.redacted_url)

    def _warn_small(self, described: list[dict[str, Any]]) -> None:
        for topic in described:
            have = len(topic.get("partitions", ()))
            if 0 < have < self.settings.partitions:
                log.warning(
                    "kafka topic %s has %d partitions, fewer than the configured %d; "
                    "existing topics are left as they are (raise it with kafka-topics --alter)",
                    topic.get("topic"),
                    have,
                    self.settings.partitions,
                )

    def _require_started(self) -> None:
        if self._state != "started":
            raise TransportError(f"kafka transport is {self._state}; call start() first")
