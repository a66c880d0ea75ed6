"""``sagawire run`` as a subprocess that a fault test can kill and start again.

Unlike :class:`tests.e2e.sidecar.Sidecar` (the shipped order saga, one life) a
:class:`SidecarSlot` takes the saga module to load and keeps its HTTP port, store
and consumer group across restarts, so a test can ``kill -9`` it and start its
successor where it was. Every life appends to one log file, headed by a line
naming the life.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import IO

import httpx

from tests.e2e.sidecar import (
    LOG_LEVEL_ENV,
    ORDER_SAGA,
    READY_TIMEOUT,
    ROOT,
    SAGAWIRE,
    free_port,
    until_ready,
)

__all__ = ["FAST_SAGA", "ORDER_SAGA", "REFUSED_SAGAS", "SidecarSlot"]

FAULTS_DIR = Path(__file__).resolve().parent
FAST_SAGA = FAULTS_DIR / "sagas_fast.py"
REFUSED_SAGAS = FAULTS_DIR / "sagas_refused.py"


class SidecarSlot:
    """One sidecar's place: its arguments and port; a process per :meth:`start`."""

    def __init__(
        self,
        *,
        sagas: Path,
        broker_url: str,
        store_url: str,
        group: str,
        log: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.args = [
            *SAGAWIRE,
            "run",
            "--sagas",
            str(sagas),
            "--broker",
            broker_url,
            "--store",
            store_url,
            "--http",
            f"127.0.0.1:{self.port}",
            "--group",
            group,
        ]
        self.env = {
            **os.environ,
            "SAGAWIRE_LOG_LEVEL": os.environ.get(LOG_LEVEL_ENV, "info"),
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.spawned: list[float] = []  # monotonic time of each start
        self._log_file: IO[bytes] | None = None

    def start(self) -> float:
        """Spawn a new life (the previous one must have ended); returns its spawn time."""
        assert self.proc is None or self.proc.poll() is not None, "a sidecar is still running"
        self._close_log()
        self._log_file = self.log.open("ab")
        self._log_file.write(f"---- life {len(self.spawned) + 1} ----\n".encode())
        self._log_file.flush()
        self.proc = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=self.env,
        )
        self.spawned.append(time.monotonic())
        return self.spawned[-1]

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(line[:400] for line in text.splitlines()[-lines:])

    def digest(self, lines: int = 25) -> str:
        """For a failure message: the last warnings and errors of every life (info lines,
        one per finished saga, would bury them), then the last few lines."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        all_lines = text.splitlines()
        quiet = ('"level":"info"', '"level":"debug"')
        loud = [ln for ln in all_lines if not any(q in ln for q in quiet)]
        return "\n".join(
            [
                *(ln[:500] for ln in loud[-lines:]),
                "-- last lines --",
                *(ln[:300] for ln in all_lines[-5:]),
            ]
        )

    async def wait_ready(self, http: httpx.AsyncClient, timeout: float = READY_TIMEOUT) -> float:
        """Poll ``/readyz`` until 200; returns the seconds it took."""

        def exit_code() -> int | None:
            return None if self.running else (self.proc.returncode if self.proc else -1)

        return await until_ready(http, self.base, exit_code, self.tail, timeout)

    async def kill(self) -> None:
        """``kill -9`` and reap."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self._wait(10.0, "SIGKILL")

    async def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM, then the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return await self._wait(timeout, "SIGTERM")

    async def _wait(self, timeout: float, what: str) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while (code := self.proc.poll()) is None:
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"sidecar still running {timeout}s after {what}")
            await asyncio.sleep(0.02)
        return code

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def close(self) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()
        self._close_log()
