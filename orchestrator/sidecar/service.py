"""The sidecar process: saga definitions + store + transport + engine, served over HTTP.

This module is the process and only that: start-up, the run until a signal, shutdown,
and the answers the HTTP API asks of it (readiness, accepting an event). The routes
are in :mod:`~orchestrator.sidecar.http`, which sees this class only as the
``SidecarView`` of :mod:`~orchestrator.sidecar.api`; the settings it runs with are in
:mod:`~orchestrator.sidecar.settings`.

Start-up is ordered so that each failure names its culprit (the CLI prints it on
one line and exits 2): load the sagas, listen on the HTTP address, open the
store, connect to the broker, declare the topology and relay a crash's leftover
outbox, then consume. ``/healthz`` answers from the moment the socket is bound;
``/readyz`` only once the engine consumes and the broker is connected.

Shutdown (SIGTERM or SIGINT) runs in the reverse order: stop taking HTTP events
and wait for requests in flight, let the engine finish its batch and flush its
outbox marks, close the broker, then the store, and exit 0. The in-memory broker
forgets on exit, so with ``memory://`` the sidecar first waits (bounded) until
every event it accepted has been handled: a 202 must never be lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Awaitable, Iterator

import structlog
import uvicorn

from adapters import open_transport
from adapters._util import redact_url
from adapters.base import HEADER_MESSAGE_ID, OutgoingMessage, Transport
from adapters.memory import MemoryTransport
from orchestrator.engine import Engine, EngineConfig, tracing
from orchestrator.engine.correlate import Routed
from orchestrator.language.definition import SagaDefinition
from orchestrator.language.loader import load_sagas
from orchestrator.sidecar.api import NotAccepting
from orchestrator.sidecar.gc_tuning import gc_settings, tune_gc
from orchestrator.sidecar.http import build_app
from orchestrator.sidecar.settings import Settings
from orchestrator.sidecar.stuck import StuckWatcher
from orchestrator.store import Store, open_store
from schemas.binary import to_binary
from schemas.codec import decode
from schemas.envelope import CONTENT_TYPE
from schemas.errors import (
    ConfigError,
    DeclarationError,
    PayloadError,
    RoutingError,
    SchemaVersionError,
    StoreError,
    TransportError,
)

__all__ = ["Sidecar"]

log = structlog.get_logger("sagawire.service")


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the sidecar owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    """Bind here, not in uvicorn, so a busy port is a one-line ConfigError, not sys.exit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when
    # the proto says TCP; with proto 0 every response waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


class Sidecar:
    """One sidecar: owns the store, the transport, the engine and the HTTP server.

    Implements :class:`~orchestrator.sidecar.api.SidecarView` (by shape) for the app
    :func:`~orchestrator.sidecar.http.build_app` makes of it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sagas: list[SagaDefinition] = []
        self.gc: tuple[int, int, int] | None = None  # SAGAWIRE_GC, read by load()
        self.store: Store | None = None
        self.transport: Transport | None = None
        self.engine: Engine | None = None
        self.phase = "starting"
        self.accepting = False
        self.address = ""
        self._store_open = False
        self._transport_started = False
        self._stop = asyncio.Event()
        self._stopping = asyncio.Event()
        self._forced = False
        self._server: _Server | None = None

    @property
    def store_open(self) -> bool:
        return self._store_open

    # -- start-up ------------------------------------------------------------------

    def load(self) -> None:
        """Load and check the saga definitions (DefinitionError names the culprit)."""
        self.phase = "loading sagas"
        self.gc = gc_settings()  # a bad SAGAWIRE_GC is refused before anything opens
        self.sagas = load_sagas(self.settings.sagas)

    async def open(self) -> None:
        """Open store and broker, declare topology; raise one clear error on failure."""
        if not self.sagas:
            self.load()
        s = self.settings
        if s.otel:  # a span per handled message (the otel extra)
            tracing.enable()
        self.phase = "opening store"
        self.store = open_store(s.store)
        try:
            await self.store.open()
        except SchemaVersionError as exc:
            raise SchemaVersionError(f"store {redact_url(s.store)}: {exc}") from exc
        except (StoreError, OSError) as exc:
            raise StoreError(f"store {redact_url(s.store)} unreachable: {exc}") from exc
        except ValueError as exc:  # a driver's parse of the URL (asyncpg: a bad port...)
            raise ConfigError(f"store {redact_url(s.store)}: {exc}") from None
        self._store_open = True
        self.phase = "connecting to broker"
        self.transport = open_transport(s.broker)
        try:
            await self.transport.start()
            self._transport_started = True
            self.engine = Engine(
                self.sagas,
                self.store,
                self.transport,
                config=EngineConfig(
                    group=s.group,
                    limits=s.limits,
                    content_mode=s.content_mode,
                    catch_up=s.catch_up,
                    deadletter_retention=s.deadletter_retention,
                    cache_size=s.cache_size,
                    partitions=s.partitions,
                    replica=s.replica,
                    lease_ttl=s.lease_ttl,
                ),
            )
            self.phase = "declaring topology"
            await self.engine.prepare()
        except DeclarationError as exc:  # reached, but it holds something else
            raise DeclarationError(f"broker {redact_url(s.broker)}: {exc}") from exc
        except (TransportError, OSError) as exc:
            raise TransportError(f"broker {redact_url(s.broker)} unreachable: {exc}") from exc
        except StoreError as exc:
            raise StoreError(f"store {redact_url(s.store)}: {exc}") from exc
        tune_gc(self.gc)  # what exists now lives as long as the process
        self.accepting = True
        self.phase = "starting consumer"

    # -- the whole life ------------------------------------------------------------

    async def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT, shut down in order. 0 on a clean stop."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop, sig.name)
        try:
            return await self._run()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)

    def request_stop(self, reason: str = "requested") -> None:
        """Begin an orderly shutdown; a second request stops waiting for HTTP requests in
        flight and for the in-memory drain (the engine still finishes its batch)."""
        if self._stop.is_set():
            self._forced = True
            if self._server is not None:
                self._server.force_exit = True
            log.warning("second stop request: not waiting for requests or events", signal=reason)
            return
        log.info("stopping", signal=reason)
        self._stop.set()

    async def _run(self) -> int:
        s = self.settings
        self.load()
        sock = _bind(s.host, s.port)
        host, port = sock.getsockname()[:2]
        self.address = f"{host}:{port}"
        server = _Server(
            uvicorn.Config(
                build_app(self),
                log_config=None,
                log_level="warning",
                access_log=False,
                lifespan="on",  # the app's bulk jobs are cancelled at its shutdown
                server_header=False,
                timeout_graceful_shutdown=s.http_grace,
            )
        )
        self._server = server
        server_task = asyncio.ensure_future(server.serve(sockets=[sock]))
        engine_task: asyncio.Future[None] | None = None
        watcher: asyncio.Future[None] | None = None
        try:
            if not await self._until_stop(self.open()):
                return 0
            assert self.engine is not None
            engine_task = asyncio.ensure_future(self.engine.run(self._stopping))
            watcher = asyncio.ensure_future(StuckWatcher(self).run(self._stopping))
            self.phase = "running"
            # The first line a healthy start logs; nothing before it, so that a failed
            # start leaves exactly one line on stderr (the CLI's error).
            log.info(
                "sidecar running",
                http=self.address,
                sagas=[x.name for x in self.sagas],
                broker=redact_url(s.broker),
                store=redact_url(s.store),
                group=s.group,
            )
            stop_wait = asyncio.ensure_future(self._stop.wait())
            done, _ = await asyncio.wait(
                {stop_wait, engine_task, server_task}, return_when=asyncio.FIRST_COMPLETED
            )
            stop_wait.cancel()
            if stop_wait not in done:
                log.error(
                    "a sidecar task ended unexpectedly; shutting down",
                    engine_ended=engine_task in done,
                    http_ended=server_task in done,
                )
                return 1
            return 0
        finally:
            if watcher is not None:
                watcher.cancel()
            await self._shutdown(server, server_task, engine_task)

    async def _until_stop(self, work: Awaitable[None]) -> bool:
        """Run start-up ``work`` unless a stop request comes first (then False)."""
        task = asyncio.ensure_future(work)
        stop_wait = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        if task.done():
            task.result()  # start-up errors propagate to the CLI
            return True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        return False

    async def _shutdown(
        self,
        server: _Server,
        server_task: asyncio.Future[None],
        engine_task: asyncio.Future[None] | None,
    ) -> None:
        self.phase = "shutting down"
        self.accepting = False
        server.should_exit = True
        with contextlib.suppress(Exception, SystemExit):
            await server_task  # uvicorn waits for requests in flight (http_grace)
        if engine_task is not None and not engine_task.done():
            await self._drain_memory(engine_task)
        self._stopping.set()
        if engine_task is not None:
            await self._stop_engine(engine_task)
        await self.close()
        if self.engine is not None:
            log.info("stopped", **self.engine.stats.summary())

    async def _stop_engine(self, engine_task: asyncio.Future[None]) -> None:
        """Wait for ``Engine.run`` to drain; if it does not, end consumption by closing
        the transport (a consumer idle-waiting for a delivery only ends that way)."""
        await asyncio.wait({engine_task}, timeout=self.settings.engine_grace)
        if not engine_task.done() and self.transport is not None and self._transport_started:
            log.warning("engine still waiting for deliveries after stop; closing the broker")
            self._transport_started = False
            with contextlib.suppress(Exception):
                await self.transport.close()
        try:
            await engine_task
        except Exception:
            log.exception("engine failed")

    async def _drain_memory(self, engine_task: asyncio.Future[None]) -> None:
        """On ``memory://`` the queue dies with us: handle what was accepted first."""
        t = self.transport
        if not isinstance(t, MemoryTransport):
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.memory_drain
        group = self.settings.group
        # Polled: the memory broker signals arrivals, not an empty queue.
        while (  # noqa: ASYNC110
            t.broker.depth(group)
            and not engine_task.done()
            and not self._forced
            and loop.time() < deadline
        ):
            await asyncio.sleep(0.02)
        left = t.broker.depth(group)
        if left:
            log.warning(
                "in-memory broker still held events at shutdown; they are lost", events=left
            )

    async def close(self) -> None:
        """Close the transport, then the store. Idempotent."""
        self.accepting = False
        if self.transport is not None and self._transport_started:
            self._transport_started = False
            try:
                await self.transport.close()
            except Exception:
                log.exception("closing the broker connection failed")
        if self.store is not None and self._store_open:
            self._store_open = False
            try:
                await self.store.close()
            except Exception:
                log.exception("closing the store failed")
        self.phase = "stopped"

    # -- what the HTTP API asks ------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        """Ready means: the engine consumes, the broker is connected, the store answers.
        The reason names the first dependency that fails (see :meth:`checks`)."""
        if self.phase != "running":
            return False, self.phase
        failing = [f"{name}: {why}" for name, why in self.checks().items() if why != "ok"]
        return (not failing), (failing[0] if failing else "")

    def checks(self) -> dict[str, str]:
        """Each dependency's state: ``"ok"`` or why not (``/readyz`` shows them all)."""
        if self.phase != "running" or self.engine is None or self.transport is None:
            return {"sidecar": self.phase}
        engine = self.engine
        broker = self.transport.readiness
        health = engine.store_health
        return {
            "engine": "ok" if engine.consuming else engine.ready_reason or "not consuming",
            "broker": "ok" if broker.ready else broker.reason or "not connected",
            "store": "ok" if health.up else health.reason,
        }

    async def accept(self, body: bytes) -> str:
        """Validate one structured CloudEvent and publish it to its type. Returns its id.

        Raises MessageError (the client's fault), TransportError (the broker's),
        NotAccepting while starting or stopping."""
        env = decode(body, self.settings.limits)
        if not self.accepting or self.transport is None or self.engine is None:
            raise NotAccepting(f"not accepting events ({self.phase})")
        broker = self.transport.readiness
        if not broker.ready:  # say so now, not after a publish timeout
            raise NotAccepting(f"not accepting events: {broker.reason or 'broker not connected'}")
        health = self.engine.store_health
        if not health.up:  # it would only wait on the broker, unhandled, for who knows how long
            raise NotAccepting(f"not accepting events: {health.reason}")
        router = self.engine.router
        routes = router.route(env)
        for route in routes:  # data the saga's model refuses: the client's to fix (422)
            if isinstance(route, PayloadError):
                raise route
        unknown = routes[0] if isinstance(routes[0], RoutingError) else None
        if unknown is not None and env.type not in (*router.consumes(), *router.produces()):
            # no saga takes it and no participant is told of it: on a broker nothing
            # is bound to that destination and it would be dropped unseen
            raise unknown  # names the types the loaded sagas consume
        key = env.correlationid
        if key is None:  # the saga's own correlation, so a partitioned broker keeps order
            key = next((r.correlation_id for r in routes if isinstance(r, Routed)), None)
        headers = {"content-type": CONTENT_TYPE, HEADER_MESSAGE_ID: env.id}
        if self.settings.content_mode == "binary":  # as the sidecar's own messages go out
            body, headers = to_binary(env)
            headers[HEADER_MESSAGE_ID] = env.id
        message = OutgoingMessage(
            destination=env.type, body=body, message_id=env.id, key=key, headers=headers
        )
        limit = self.settings.publish_timeout
        try:  # a broker that just went away is noticed by a request that times out
            await asyncio.wait_for(self.transport.publish([message]), limit)
        except TimeoutError:
            raise TransportError(
                f"the broker did not confirm event {env.id!r} within {limit:g}s; it may or"
                " may not have been published: send it again (the same id is de-duplicated)"
            ) from None
        return env.id
