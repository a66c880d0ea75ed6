"""One AMQP connection that comes back by itself.

We run our own reconnect loop over plain :func:`aio_pika.connect` rather than
``connect_robust``: the transport must know exactly when the connection is gone
(readiness, stale deliveries) and what is re-done after a reconnect (declare the
topology again, then restart consumers, in that order). ``connect_robust``
replays channels and consumers in the background on its own schedule, which
hides both. The loop backs off with jitter (:class:`Backoff`), and every
successful (re)connect runs the ``on_connect`` hook before readiness turns true.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import aio_pika
from aio_pika.abc import AbstractConnection

from adapters._rabbitmq_config import RabbitConfig
from adapters._rabbitmq_errors import translate
from adapters._util import Backoff
from adapters.base import Readiness
from schemas.errors import TransportError

__all__ = ["Link"]

log = logging.getLogger("sagawire.adapters.rabbitmq")

OnConnect = Callable[[AbstractConnection], Awaitable[None]]

WAIT_FOR_CONNECTION = 5.0
"""How long an operation waits for a reconnect in progress before failing."""


class Link:
    """Owns the connection; ``on_connect`` rebuilds channels and consumers on it."""

    def __init__(self, config: RabbitConfig, on_connect: OnConnect, *, role: str) -> None:
        self._config = config
        self._on_connect = on_connect
        self.role = role
        """``consume`` or ``publish``: the transport keeps one connection for each."""
        self._connection: AbstractConnection | None = None
        self._up = asyncio.Event()
        self._lost = asyncio.Event()
        self._closing = False
        self._reason = "not started"
        self._task: asyncio.Task[None] | None = None
        self._backoff = Backoff(initial=0.1, maximum=config.reconnect_max)

    @property
    def readiness(self) -> Readiness:
        conn = self._connection
        if self._up.is_set() and conn is not None and not conn.is_closed:
            return Readiness(True)
        return Readiness(False, self._reason)

    async def start(self) -> None:
        """Connect once, failing fast; after that, reconnect forever."""
        self._closing = False
        await self._connect()
        self._task = asyncio.create_task(
            self._supervise(), name=f"sagawire-amqp-{self.role}-reconnect"
        )

    async def close(self) -> None:
        self._closing = True
        self._reason = "closed"
        self._up.clear()
        self._lost.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._drop()

    async def connection(self) -> AbstractConnection:
        """The live connection, waiting briefly if a reconnect is under way."""
        if self._closing:
            raise TransportError(f"RabbitMQ transport for {self._config.display_url} is closed")
        if not self._up.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._up.wait(), WAIT_FOR_CONNECTION)
        conn = self._connection
        if conn is None or conn.is_closed or not self._up.is_set():
            raise TransportError(f"not connected to {self._config.display_url}: {self._reason}")
        return conn

    async def _connect(self) -> None:
        doing = "connecting"
        try:
            conn = await aio_pika.connect(**self._config.connect_kwargs(self.role))
        except (aio_pika.exceptions.AMQPError, OSError, TimeoutError) as exc:
            raise translate(exc, doing, self._config) from None
        conn.close_callbacks.add(self._on_close)
        self._connection = conn
        try:
            await self._on_connect(conn)
        except BaseException:
            await self._drop()
            raise
        self._reason = ""
        self._backoff.reset()
        self._lost.clear()  # a loss seen while on_connect ran belonged to a failed attempt
        self._up.set()

    def _on_close(self, sender: object, exc: BaseException | None = None) -> None:
        if sender is not self._connection or self._closing:
            return
        self._up.clear()
        self._reason = (
            f"{self.role} connection to {self._config.display_url} lost ({type(exc).__name__})"
        )
        log.warning("rabbitmq: %s; reconnecting", self._reason)
        self._lost.set()

    async def _drop(self) -> None:
        conn, self._connection = self._connection, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _supervise(self) -> None:
        while not self._closing:
            await self._lost.wait()
            self._lost.clear()
            await self._drop()
            while not self._closing:
                await asyncio.sleep(self._backoff.next_delay())
                try:
                    await self._connect()
                except Exception as exc:  # keep the loop alive whatever went wrong
                    self._reason = str(exc)
                    log.warning("rabbitmq: reconnect failed: %s", exc)
                    continue
                log.info("rabbitmq: reconnected to %s", self._config.display_url)
                break
