"""A service that takes part in sagas: it handles messages and sends what its handlers return.

One batch of deliveries, in the order of the data flow::

    bytes -> envelope (schemas.codec, or schemas.binary for binary content mode; bad
             input is dead-lettered with the reason)
          -> seen before? (ReplyMemory.recall: a copy is answered with the first replies)
          -> data validated against the handler's model (PayloadError: dead-lettered)
          -> handler -> replies built (orchestrator.client.events: ids derived, correlation
             and causation filled in)
          -> ReplyMemory.remember -> Transport.publish -> Transport.ack

Nothing is acknowledged before the handler returned and its replies were published, so
a crash anywhere before means a redelivery, never a lost message; and what was
remembered before the crash is published again when the copy comes. A handler that
raises is given back to the broker after ``retry_delay`` (dead-lettered on its last
delivery); one that raises a :class:`~schemas.errors.MessageError` is dead-lettered at
once. A handler that returns an awaitable (``async def``) finishes in a task of its
own, so a slow one holds only its message; ``max_in_flight`` bounds how many wait.

The end of each batch (remember, publish, dead-letter, acknowledge) is a
:class:`~orchestrator.client.settling.Settler`'s: broker and store trouble that may pass
is waited out with backoff, the deliveries held meanwhile (the transports keep them
leased); anything else stops :meth:`Service.run` with the error.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar, overload

from pydantic import BaseModel, ValidationError

from adapters import open_transport
from adapters.base import HEADER_CONTENT_TYPE, Delivery, Topology, Transport
from orchestrator.client import tracing
from orchestrator.client.durable import open_replies
from orchestrator.client.events import Emit, Mode, reply_message
from orchestrator.client.handlers import IGNORE, Handler, HandlerTable, Outcome
from orchestrator.client.replies import Key, RecentReplies, ReplyMemory, Sent
from orchestrator.client.replying import compact as _compact
from orchestrator.client.replying import replies_for
from orchestrator.client.settling import Settler
from schemas.binary import binary_prefix, decode_binary
from schemas.codec import decode, describe_validation_error
from schemas.envelope import CONTENT_TYPE, Envelope
from schemas.errors import MessageError, SagawireError
from schemas.limits import DEFAULT_LIMITS, Limits

__all__ = ["Service", "ServiceStats"]

log = logging.getLogger("sagawire.client")

M = TypeVar("M", bound=BaseModel)
F = TypeVar("F", bound=Callable[..., Any])

PRUNE_INTERVAL = 3600.0


@dataclass
class ServiceStats:
    """Deliveries by what became of them (``received`` counts every one)."""

    received: int = 0
    handled: int = 0
    duplicates: int = 0
    ignored: int = 0
    dead_lettered: int = 0
    failed: int = 0


class Service:
    """A participant: ``name`` handles the message types registered with :meth:`on` or
    :meth:`add`, consuming as group ``group`` (default: ``name``) and sending as
    ``source`` (default: ``name``).

    ``broker`` is a transport URL (the same as ``sagawire run --broker``), which the
    service opens and closes, or a :class:`~adapters.base.Transport` the caller
    started. ``replies`` is where handled messages are remembered: in memory (the
    default, the last ``remember`` to twice that), a durable store URL
    (``sqlite:///path``, ``postgresql://...``) kept ``retention`` seconds, or a
    :class:`~orchestrator.client.replies.ReplyMemory`."""

    def __init__(
        self,
        name: str,
        broker: str | Transport,
        *,
        source: str | None = None,
        group: str | None = None,
        replies: str | ReplyMemory | None = None,
        remember: int = 10_000,
        retention: float = 7 * 86400.0,
        mode: Mode = "structured",
        max_batch: int = 256,
        max_in_flight: int = 1024,
        retry_delay: float = 1.0,
        limits: Limits = DEFAULT_LIMITS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.source = source or name
        self.group = group or name
        self._owns_transport = isinstance(broker, str)
        self.transport: Transport = open_transport(broker) if isinstance(broker, str) else broker
        if replies is None:
            replies = RecentReplies(remember)
        elif isinstance(replies, str):
            replies = open_replies(replies, self.group)
        self.replies: ReplyMemory = replies
        self._recent = replies if isinstance(replies, RecentReplies) else None
        self.retention = retention
        self.mode = mode
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.retry_delay = retry_delay
        self.limits = limits
        self.clock = clock
        self.handlers = HandlerTable(name)
        self.stats = ServiceStats()
        self.settle = Settler(
            name,
            self.transport,
            replies,
            retry_delay=retry_delay,
            clock=clock,
            on_dead_letter=self._count_dead_letter,
        )
        self._started = self._replies_open = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._inflight: dict[Key, asyncio.Future[Sent | None]] = {}
        self._pruned = 0.0

    # -- declaring what it handles ------------------------------------------------------

    @overload
    def on(self, type: str, *, emits: Sequence[str] = ()) -> Callable[[F], F]: ...

    @overload
    def on(
        self, type: str, model: type[M], *, emits: Sequence[str] = ()
    ) -> Callable[[Handler[M]], Handler[M]]: ...

    def on(
        self, type: str, model: type[BaseModel] | None = None, *, emits: Sequence[str] = ()
    ) -> Callable[[Any], Any]:
        """Register the decorated function as the handler of ``type`` messages, their data
        validated as ``model`` (without one, the handler gets the raw JSON value).
        ``emits``: the types it may send, declared with the service's topology."""

        def register(handler: Any) -> Any:
            self.handlers.add(type, handler, model, emits)
            return handler

        return register

    def add(
        self,
        type: str,
        handler: Handler[Any],
        model: type[BaseModel] | None = None,
        *,
        emits: Sequence[str] = (),
    ) -> None:
        """:meth:`on` without a decorator."""
        self.handlers.add(type, handler, model, emits)

    @property
    def topology(self) -> Topology:
        return Topology(self.handlers.consumes, self.handlers.produces, self.group)

    # -- running -----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (a transport opened from a URL), open the reply memory and declare the
        service's queue: from now on messages for it are kept for it."""
        if not self._started:
            if self._owns_transport:
                await self.transport.start()
            await self._open_replies()
            await self.transport.declare(self.topology)
            self._started = True

    async def _open_replies(self) -> None:
        if not self._replies_open:
            await self.settle.retrying("open the reply memory", self.replies.open)
            self._replies_open = True

    async def run(self) -> None:
        """Handle messages until the transport's stream ends (:meth:`close`) or the task
        is cancelled (starting the service first if it opened its transport itself).
        Handlers still running then are cancelled: their messages were not
        acknowledged, so the broker delivers them again."""
        if not self.handlers.routes:
            raise SagawireError(f"service {self.name!r} has no handlers: nothing to consume")
        if self._owns_transport and not self._started:
            await self.start()
        await self._open_replies()
        try:
            async for batch in self.transport.consume(self.topology, max_batch=self.max_batch):
                await self._handle(batch)
                while len(self._tasks) >= self.max_in_flight:
                    await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
                await self._maybe_prune()
        finally:
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        """Close the reply memory, and the transport if the service opened it."""
        if self._owns_transport:
            await self.transport.close()
        if self._replies_open:
            await self.replies.close()
            self._replies_open = False
        self._started = False

    async def __aenter__(self) -> Service:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- one batch ----------------------------------------------------------------------

    async def _handle(self, batch: Sequence[Delivery]) -> None:
        """One batch, as the module docstring draws it. Written for the common case (a
        structured message, handled at once, answered with one Emit, remembered in
        memory): that runs without a method call of its own, since the bench runs
        services in the engine's process and counts what they cost."""
        stats = self.stats
        stats.received += len(batch)
        dead: list[tuple[Delivery, str]] = []
        todo: list[tuple[Delivery, Envelope, Key]] = []
        limits = self.limits
        for d in batch:
            try:
                if d.headers.get(HEADER_CONTENT_TYPE) == CONTENT_TYPE or not binary_prefix(
                    d.headers
                ):
                    env = decode(d.body, limits)
                else:  # binary content mode: the attributes in headers
                    env = decode_binary(d.headers, d.body, limits)
            except MessageError as exc:
                dead.append((d, f"{self.name}: {exc.reason}"))
                continue
            todo.append((d, env, (env.source, env.id)))
        recent = self._recent
        seen: dict[Key, Sent] = {}
        if recent is None:
            if todo:
                keys = [k for _, _, k in todo]
                seen = await self.settle.retrying(
                    "recall replies", lambda: self.replies.recall(keys)
                )
            newer = older = seen
        else:
            newer, older = recent.recent, recent.older
        answered: list[tuple[Delivery, Sent]] = []
        quiet: list[Delivery] = []
        fresh: list[tuple[Key, Sent]] = []
        failed: list[tuple[Delivery, str]] = []
        now = datetime.now(UTC)
        inflight = self._inflight
        routes = self.handlers.routes
        source = self.source
        structured = self.mode == "structured"
        handled = duplicates = 0
        for d, env, key in todo:
            sent = newer.get(key)
            if sent is None:
                sent = older.get(key)
            if sent is not None:  # a copy of a message handled before: the first replies again
                duplicates += 1
                answered.append((d, sent))
                continue
            if inflight and key in inflight:  # a copy of one a handler is still working on
                self._later(self._repeat_later(d, inflight[key]))
                continue
            route = routes.get(env.type)
            try:
                if route is None or route.model is not None or env.__pydantic_extra__:
                    result = self._call(env)  # validation, trace context: the long way
                else:
                    result = route.handler(env.data, env)
                if type(result) is Emit and structured:
                    cid = env.correlationid or d.key
                    sent = (reply_message(env, result, source=source, index=0, now=now, key=cid),)
                elif result is IGNORE:
                    stats.ignored += 1
                    quiet.append(d)
                    continue
                elif inspect.isawaitable(result):
                    future: asyncio.Future[Sent | None] = asyncio.get_running_loop().create_future()
                    inflight[key] = future
                    self._later(self._finish_later(d, env, key, result, future))
                    continue
                else:
                    sent = self._replies(env, result, now, d.key)
            except MessageError as exc:
                dead.append((d, f"{self.name}: {exc.reason}"))
                continue
            except Exception as exc:  # the handler's, or what it returned was no Emit
                failed.append((d, self._failure(env, exc)))
                continue
            handled += 1
            if recent is not None:
                recent.put(key, _compact(sent))
            else:
                fresh.append((key, sent))
                seen[key] = sent  # a later copy in this batch
            answered.append((d, sent))
        stats.handled += handled
        stats.duplicates += duplicates
        await self.settle(answered, quiet, dead, fresh, failed)

    def _call(self, env: Envelope) -> Any:
        """The handler's outcome (or awaitable) for ``env``, run in its trace."""
        route = self.handlers.routes.get(env.type)
        if route is None:
            raise MessageError(f"no handler for {env.type!r} messages")
        try:
            data = env.data if route.model is None else route.validate(env.data)
        except ValidationError as exc:
            raise MessageError(
                f"data of {env.type!r} {env.id!r}: " + describe_validation_error(exc, "field")
            ) from None
        token = tracing.attach(env)
        try:
            return route.handler(data, env)
        finally:
            if token is not None:
                tracing.detach(token)

    def _replies(self, env: Envelope, result: Outcome, now: datetime, key: str | None) -> Sent:
        """The messages to send for ``result`` (keyed like the cause)."""
        return replies_for(
            env, result, service=self.name, source=self.source, mode=self.mode, now=now, key=key
        )

    def _count_dead_letter(self) -> None:
        self.stats.dead_lettered += 1

    def _failure(self, env: Envelope, exc: Exception) -> str:
        self.stats.failed += 1
        log.warning(
            "service %s: handler for %s %s (from %s) failed; redelivery in %.1fs",
            self.name,
            env.type,
            env.id,
            env.source,
            self.retry_delay,
            exc_info=exc,
        )
        return f"{self.name}: handler failed: {type(exc).__name__}: {exc}"

    # -- what finishes later ------------------------------------------------------------

    def _later(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish_later(
        self,
        d: Delivery,
        env: Envelope,
        key: Key,
        pending: Awaitable[Any],
        future: asyncio.Future[Sent | None],
    ) -> None:
        sent: Sent | None = None
        try:
            try:
                result = await pending
                if result is IGNORE:
                    self.stats.ignored += 1
                    await self.settle([], [d], [], [], [])
                    return
                sent = self._replies(env, result, datetime.now(UTC), d.key)
            except MessageError as exc:
                await self.settle([], [], [(d, f"{self.name}: {exc.reason}")], [], [])
                return
            except Exception as exc:
                await self.settle([], [], [], [], [(d, self._failure(env, exc))])
                return
            self.stats.handled += 1
            if self._recent is not None:
                self._recent.put(key, _compact(sent))
                await self.settle([(d, sent)], [], [], [], [])
            else:
                await self.settle([(d, sent)], [], [], [(key, sent)], [])
        finally:
            self._inflight.pop(key, None)
            if not future.done():
                future.set_result(sent)

    async def _repeat_later(self, d: Delivery, first: asyncio.Future[Sent | None]) -> None:
        """A copy of a message still being handled: once it is, its replies again (or,
        if it failed or was ignored, the copy is handled as new, by redelivery)."""
        sent = await asyncio.shield(first)
        if sent is None:
            await self.settle.retrying("give back", lambda: self.transport.nack([d], delay=0.0))
            return
        self.stats.duplicates += 1
        await self.settle([(d, sent)], [], [], [], [])

    async def _maybe_prune(self) -> None:
        if self._recent is not None:
            return
        now = self.clock()
        if now - self._pruned >= PRUNE_INTERVAL:
            self._pruned = now
            await self.settle.retrying(
                "prune replies", lambda: self.replies.prune(now - self.retention)
            )
