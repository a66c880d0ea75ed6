"""A tiny TCP proxy on loopback that a test owns, to fake a network in trouble.

Put it between a client (the sidecar, a participant) and a shared service, hand
the client ``127.0.0.1:<proxy.port>``, and break the path without touching the
service:

* :meth:`TcpProxy.cut` drops every open connection and refuses new ones (an outage);
* :meth:`TcpProxy.stall` keeps connections open but stops forwarding bytes both ways
  (a black hole: the client only notices through its own timeouts);
* :meth:`TcpProxy.slow` delays every chunk of bytes by ``delay`` seconds;
* :meth:`TcpProxy.drop` discards what flows one way (``"up"``: client to service,
  ``"down"``: service to client), e.g. to lose a reply a participant publishes;
* :meth:`TcpProxy.resume` lifts all of these; :meth:`TcpProxy.reset` drops the
  connections but accepts new ones at once.

Dropping bytes in the middle of a stream desynchronises most protocols: drop while
the client sends one whole message on an otherwise idle connection, then
:meth:`reset` so the client starts afresh. ``forwarded``/``dropped`` count bytes per
direction, ``accepted`` the connections, for assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

Direction = Literal["up", "down"]
DIRECTIONS: tuple[Direction, ...] = ("up", "down")


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.accepted = 0
        self.forwarded: dict[Direction, int] = dict.fromkeys(DIRECTIONS, 0)
        self.dropped: dict[Direction, int] = dict.fromkeys(DIRECTIONS, 0)
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._refusing = False
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._delay = 0.0
        self._dropping: set[Direction] = set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aenter__(self) -> TcpProxy:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        if self._refusing:  # cut while this connection was being set up
            up_writer.close()
            writer.close()
            return
        self.accepted += 1
        self._writers.update({writer, up_writer})
        t1 = asyncio.ensure_future(self._pipe(reader, up_writer, "up"))
        t2 = asyncio.ensure_future(self._pipe(up_reader, writer, "down"))
        self._pipes.update({t1, t2})
        for t in (t1, t2):
            t.add_done_callback(self._pipes.discard)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: Direction
    ) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()  # stalled: hold the chunk (TCP pushes back)
                if self._delay:
                    await asyncio.sleep(self._delay)
                if direction in self._dropping:
                    self.dropped[direction] += len(data)
                    continue
                writer.write(data)
                await writer.drain()
                self.forwarded[direction] += len(data)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
            self._writers.discard(writer)

    async def cut(self) -> None:
        """Drop every connection and refuse new ones (until :meth:`resume`)."""
        self._refusing = True
        for w in list(self._writers):
            with contextlib.suppress(Exception):
                w.transport.abort()
        for t in list(self._pipes):
            t.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        self._pipes.clear()
        self._writers.clear()

    def stall(self) -> None:
        """Keep connections open and accept new ones, but forward nothing either way."""
        self._flowing.clear()

    def slow(self, delay: float) -> None:
        """Delay every chunk, both ways, by ``delay`` seconds (0 for full speed)."""
        self._delay = max(0.0, delay)

    def drop(self, direction: Direction) -> None:
        """Discard the bytes flowing ``direction`` ("up": client to target, "down":
        target to client) until :meth:`resume`; the connections stay open."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")
        self._dropping.add(direction)

    def resume(self) -> None:
        """Back to normal: accept connections, forward everything at full speed."""
        self._refusing = False
        self._dropping.clear()
        self._delay = 0.0
        self._flowing.set()

    async def reset(self) -> None:
        """Drop every connection, then take new ones at once, forwarding normally."""
        await self.cut()
        self.resume()

    async def close(self) -> None:
        await self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
