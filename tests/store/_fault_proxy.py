"""A TCP proxy the PostgreSQL outage tests own, for what ``tests.support.proxy.TcpProxy``
(cut and resume) does not do:

* :meth:`FaultProxy.stall`: connections stay open, new ones are accepted, and no byte
  goes through either way until :meth:`FaultProxy.resume`, when what was held goes
  on (a network that heals: bytes sent into the stall arrive late);
* :meth:`FaultProxy.down` / :meth:`FaultProxy.up`: nothing listens on the port, so a
  connection is refused, as by a stopped server; then the same port again;
* :meth:`FaultProxy.cut_on`: cut the connection whose client sends ``pattern``, either
  before passing it on (the server never sees it) or after, losing only the server's
  reply (it acted, the client never hears). :attr:`FaultProxy.tripped` is set once
  the server has had its say: it saw nothing, or it answered into the void.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any


class FaultProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.tripped = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._trigger: tuple[bytes, bool] | None = None
        self._lost: set[asyncio.StreamWriter] = set()  # clients whose reply is being lost

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    async def down(self) -> None:
        """Stop listening (connections are refused) and drop every connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        await self.drop()

    async def up(self) -> None:
        await self.start()

    def cut_on(self, pattern: bytes, *, deliver: bool) -> None:
        """Cut the next connection whose client sends ``pattern`` (once)."""
        self.tripped.clear()
        self._trigger = (pattern, deliver)

    async def drop(self) -> None:
        for w in list(self._writers):
            w.transport.abort()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        self.resume()
        await self.down()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        await self._flowing.wait()  # stalled: the client's connection is open, unanswered
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.add(up_writer)
        pair = (writer, up_writer)
        self._spawn(self._pump(reader, up_writer, up=True, pair=pair))
        self._spawn(self._pump(up_reader, writer, up=False, pair=pair))

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        up: bool,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        """Bytes from ``reader`` to ``writer``, client to server if ``up``; ``pair`` is the
        connection's (client, server) writers, for :meth:`cut_on`."""
        client, server = pair
        keep_open = False
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                if not up and client in self._lost:  # the answer the client never gets
                    break
                if up and self._trigger and self._trigger[0] in data:
                    deliver = self._trigger[1]
                    self._trigger = None
                    client.transport.abort()
                    if deliver:  # the server acts on it; the other pump waits for its answer
                        self._lost.add(client)
                        server.write(data)
                        await server.drain()
                        keep_open = True
                    else:
                        server.transport.abort()
                        self.tripped.set()
                    return
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            if not up and client in self._lost:  # the server answered (or hung up): done
                self._lost.discard(client)
                server.transport.abort()
                self.tripped.set()
            if not keep_open:
                with contextlib.suppress(Exception):
                    writer.close()
            self._writers.discard(writer)
