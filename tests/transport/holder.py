"""A consumer process for the kill -9 tests: take ``N`` deliveries, hold them, wait.

``python -m tests.transport.holder URL GROUP DESTINATION N`` opens the transport for
``URL``, consumes ``DESTINATION`` as ``GROUP`` until it holds ``N`` deliveries
(neither acked nor nacked), prints ``held N`` and then sleeps, still consuming in the
transport's sense (its leases kept, its group membership alive), until the test kills
it with SIGKILL: nothing is given back, as when a sidecar dies. The test then
measures how long a new consumer of the group waits for those deliveries.

:func:`start_holder` is the test's side: it starts the process and waits until it
holds what it should.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from adapters import open_transport
from adapters.base import Delivery, Topology

ROOT = Path(__file__).resolve().parents[2]


@contextlib.asynccontextmanager
async def start_holder(
    url: str, group: str, destination: str, n: int, timeout: float = 40.0
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A holder process that holds ``n`` deliveries; killed (-9) on exit at the latest."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.transport.holder",
        url,
        group,
        destination,
        str(n),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout)
        assert line.decode().strip() == f"held {n}", f"holder said {line!r}"
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def hold(url: str, group: str, destination: str, n: int) -> None:
    transport = open_transport(url)
    await transport.start()
    topology = Topology(consumes=(destination,), group=group)
    await transport.declare(topology)
    stream = transport.consume(topology, max_batch=n)
    held: list[Delivery] = []
    while len(held) < n:
        held.extend(await anext(stream))
    print(f"held {len(held)}", flush=True)
    await asyncio.Event().wait()  # until SIGKILL


if __name__ == "__main__":
    url, group, destination, count = sys.argv[1:5]
    asyncio.run(hold(url, group, destination, int(count)))
