"""One NATS connection and what the transport needs to know about it.

nats-py reconnects by itself; what it does not keep is *whether* the connection is
up, since when it has been down, and whether it is gone for good. Those live here
(readiness, the pumps' waits), with the connect that fails fast and in one line at
start-up, and the callbacks nats-py calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from adapters._nats_errors import translate
from adapters._nats_options import NatsOptions
from adapters.base import Readiness
from schemas.errors import TransportError

__all__ = ["NatsLink"]

_log = logging.getLogger("adapters.nats")


class NatsLink:
    """The connection (``nc``), its JetStream context (``js``) and its state events:
    ``connected`` (up now), ``lost`` (nats-py closed it for good, not us) and
    ``closed`` (we are closing)."""

    def __init__(self, options: NatsOptions) -> None:
        self.options = options
        self.nc: NATS | None = None
        self.js: JetStreamContext | None = None
        self.closed = asyncio.Event()
        self.connected = asyncio.Event()
        self.lost = asyncio.Event()
        self._down_since: float | None = None
        self._starting = False
        self._start_error = ""

    async def connect(self) -> None:
        """Connect once, within ``connect_timeout``; after that nats-py reconnects."""
        nc = NATS()
        self._starting, self._start_error = True, ""
        try:
            await asyncio.wait_for(
                nc.connect(
                    **self.options.connect_kwargs(),
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    closed_cb=self._on_closed,
                ),
                timeout=self.options.connect_timeout,
            )
        except Exception as exc:
            with contextlib.suppress(Exception):
                await nc.close()
            # ``from None``: the driver's own exception is not guaranteed secret-free.
            error = self.error(exc, "connect")
            if self._start_error:  # what the client met, not only that it timed out
                error = TransportError(f"{error} (last client error: {self._start_error})")
            raise error from None
        finally:
            self._starting = False
        self.nc, self.js = nc, nc.jetstream(timeout=self.options.publish_timeout)
        self.closed.clear()
        self.lost.clear()
        self.connected.set()
        self._down_since = None

    async def disconnect(self) -> None:
        """Flush what was written (acks, naks) and close; the caller set ``closed``."""
        nc, self.nc = self.nc, None
        if nc is None:
            return
        with contextlib.suppress(Exception):
            await nc.flush(timeout=max(1, int(min(self.options.publish_timeout, 5.0))))
        with contextlib.suppress(Exception):
            await nc.close()

    def require_nc(self) -> NATS:
        if self.nc is None:
            raise TransportError(
                f"NATS transport to {self.options.display} is not started; call start() first"
            )
        return self.nc

    def require_js(self) -> JetStreamContext:
        self.require_nc()
        assert self.js is not None
        return self.js

    def error(self, exc: BaseException, doing: str) -> TransportError:
        return translate(exc, doing, self.options.display, self.options.scrub)

    @property
    def readiness(self) -> Readiness:
        nc = self.nc
        if nc is None:
            return Readiness(False, f"NATS transport to {self.options.display} is not started")
        if nc.is_closed and not self.closed.is_set():
            return Readiness(
                False,
                f"the NATS client closed its connection to {self.options.display} and will"
                " not reconnect; restart the sidecar",
            )
        if not nc.is_connected:
            since = self._down_since or asyncio.get_running_loop().time()
            down = asyncio.get_running_loop().time() - since
            return Readiness(
                False, f"disconnected from {self.options.display} {down:.1f}s ago; reconnecting"
            )
        return Readiness(True)

    # -- nats-py's callbacks --------------------------------------------------------

    async def _on_disconnected(self) -> None:
        self.connected.clear()
        if self.closed.is_set() or self._starting:  # connect() reports in one line
            return
        self._down_since = asyncio.get_running_loop().time()
        _log.warning("NATS connection to %s lost; reconnecting", self.options.display)

    async def _on_closed(self) -> None:
        """nats-py gave up on the connection (reconnects exhausted, or a protocol error
        such as a payload over the server's limit): nothing comes back by itself, so
        readiness says so for good, the pumps stop and the consume stream raises (the
        sidecar exits non-zero, for its supervisor to restart)."""
        self.connected.clear()
        if not self.closed.is_set() and not self._starting:
            self.lost.set()
            _log.error("NATS connection to %s closed for good", self.options.display)

    async def _on_reconnected(self) -> None:
        self.connected.set()
        self._down_since = None
        _log.info("NATS connection to %s restored", self.options.display)

    async def _on_error(self, exc: Exception) -> None:
        if self._starting:  # connect() fails with one line naming the last of these
            self._start_error = self.options.scrub(str(exc) or type(exc).__name__)
            return
        # Every failed reconnect attempt lands here: one warning per outage is enough.
        level = logging.DEBUG if self._down_since is not None else logging.WARNING
        _log.log(
            level,
            "NATS client error on %s: %s",
            self.options.display,
            self.options.scrub(str(exc) or type(exc).__name__),
        )
