"""The bench's simulated services: in its own process, or in a ``sagawire simulate``
child beside it (``--participants process``), as services run beside a sidecar in
production."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from typing import IO

from orchestrator.tooling.bench_lots import STALL_SECONDS
from orchestrator.tooling.participants import BENCH, Participants, start_participants

__all__ = ["ChildServices", "start_services"]


class ChildServices:
    """The simulated services in a ``sagawire simulate --fast`` child process.

    Its stderr goes to a temporary file, not a pipe: a pipe nobody reads while the
    bench runs would block the child once full."""

    def __init__(self, process: asyncio.subprocess.Process, stderr: IO[bytes]) -> None:
        self.process = process
        self.stderr = stderr

    @classmethod
    async def start(cls, broker_url: str, seed: int) -> ChildServices:
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "orchestrator.cli", "simulate", "--fast"),
            *("--broker", broker_url, "--seed", str(seed)),
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
        child = cls(process, stderr)
        assert process.stdout is not None
        try:
            async with asyncio.timeout(STALL_SECONDS):
                line = await process.stdout.readline()  # its queues exist once it prints
        except TimeoutError:
            line = b""
        if not line.startswith(b"{"):
            await child.close()
            stderr.seek(0)
            error = stderr.read().decode(errors="replace").strip()
            stderr.close()
            raise RuntimeError(f"simulated services did not start: {error or 'no output'}")
        return child

    async def close(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                async with asyncio.timeout(10):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self.stderr.close()


async def start_services(
    broker_url: str, seed: int, participants: str, max_batch: int
) -> Participants | ChildServices:
    """The simulated services, in this process or in a child (``participants``)."""
    if participants == "process":
        return await ChildServices.start(broker_url, seed)
    return await start_participants(broker_url, seed=seed, behaviour=BENCH, max_batch=max_batch)
