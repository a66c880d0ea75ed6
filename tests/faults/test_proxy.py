"""The fault proxy itself (tests/support/proxy.py), against a local echo server."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from tests.support.proxy import TcpProxy

QUIET = 0.3
"""Seconds in which bytes that should not arrive would have arrived."""


@pytest.fixture
async def echo() -> AsyncIterator[tuple[int, list[bytes]]]:
    """An echo server on loopback: its port, and every chunk it received."""
    received: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                received.append(data)
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], received
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def proxy(echo: tuple[int, list[bytes]]) -> AsyncIterator[TcpProxy]:
    async with TcpProxy("127.0.0.1", echo[0]) as p:
        yield p


async def _connect(proxy: TcpProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proxy.port)


async def _nothing_comes(reader: asyncio.StreamReader) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(100), QUIET)


async def test_forwards_and_counts(proxy: TcpProxy) -> None:
    reader, writer = await _connect(proxy)
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.read(100), 2) == b"ping"
    assert proxy.accepted == 1
    assert proxy.forwarded == {"up": 4, "down": 4}
    writer.close()


async def test_stall_holds_bytes_until_resume(
    proxy: TcpProxy, echo: tuple[int, list[bytes]]
) -> None:
    reader, writer = await _connect(proxy)
    proxy.stall()
    writer.write(b"held")
    await _nothing_comes(reader)
    assert echo[1] == [], "a stalled proxy forwarded bytes"
    proxy.resume()
    assert await asyncio.wait_for(reader.read(100), 2) == b"held"
    writer.close()


async def test_slow_delays_each_chunk(proxy: TcpProxy) -> None:
    reader, writer = await _connect(proxy)
    proxy.slow(0.2)
    start = time.monotonic()
    writer.write(b"late")
    assert await asyncio.wait_for(reader.read(100), 2) == b"late"
    assert time.monotonic() - start >= 0.35, "two hops of 0.2 s each"
    proxy.resume()
    start = time.monotonic()
    writer.write(b"fast")
    assert await asyncio.wait_for(reader.read(100), 2) == b"fast"
    assert time.monotonic() - start < 0.2
    writer.close()


async def test_drop_up_loses_what_the_client_sends(
    proxy: TcpProxy, echo: tuple[int, list[bytes]]
) -> None:
    reader, writer = await _connect(proxy)
    proxy.drop("up")
    writer.write(b"lost")
    await _nothing_comes(reader)
    assert echo[1] == [] and proxy.dropped["up"] == 4
    proxy.resume()
    writer.write(b"kept")
    assert await asyncio.wait_for(reader.read(100), 2) == b"kept"
    writer.close()


async def test_drop_down_loses_what_the_service_answers(
    proxy: TcpProxy, echo: tuple[int, list[bytes]]
) -> None:
    reader, writer = await _connect(proxy)
    proxy.drop("down")
    writer.write(b"unanswered")
    await _nothing_comes(reader)
    assert echo[1] == [b"unanswered"] and proxy.dropped["down"] == len(b"unanswered")
    with pytest.raises(ValueError, match="direction"):
        proxy.drop("sideways")  # type: ignore[arg-type]
    writer.close()


async def test_cut_refuses_until_resume_and_reset_reconnects(proxy: TcpProxy) -> None:
    opened: list[asyncio.StreamWriter] = []

    async def connect() -> asyncio.StreamReader:
        reader, writer = await _connect(proxy)
        opened.append(writer)
        return reader

    try:
        reader = await connect()
        await proxy.cut()
        assert await asyncio.wait_for(reader.read(100), 2) == b"", "a connection survived"
        reader = await connect()  # accepted by the listener, closed at once
        assert await asyncio.wait_for(reader.read(100), 2) == b""
        proxy.resume()
        reader = await connect()
        opened[-1].write(b"back")
        assert await asyncio.wait_for(reader.read(100), 2) == b"back"
        await proxy.reset()
        assert await asyncio.wait_for(reader.read(100), 2) == b""
        reader = await connect()
        opened[-1].write(b"again")
        assert await asyncio.wait_for(reader.read(100), 2) == b"again"
    finally:
        for writer in opened:
            writer.close()
