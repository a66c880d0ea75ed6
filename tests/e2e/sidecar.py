"""``sagawire run`` as a subprocess: start, wait for ``/readyz``, SIGTERM or kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
ORDER_SAGA = ROOT / "sagas" / "order.py"
_SCRIPT = Path(sys.executable).parent / "sagawire"
SAGAWIRE = (
    [str(_SCRIPT)]
    if _SCRIPT.exists()
    else [sys.executable, "-c", "from orchestrator.cli import main; main()"]
)
"""The console script next to this interpreter, else the same entry point via ``-c``."""
READY_TIMEOUT = 30.0
LOG_LEVEL_ENV = "SAGAWIRE_E2E_LOG_LEVEL"
"""Set to ``debug`` to have the sidecars log every transition (to ``sidecar-N.log``)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def until_ready(
    http: httpx.AsyncClient,
    base: str,
    exit_code: Callable[[], int | None],
    tail: Callable[[], str],
    timeout: float = READY_TIMEOUT,
    interval: float = 0.05,
) -> float:
    """Poll ``base``'s ``/readyz`` until 200; the seconds it took. Fails at once, with the
    log's tail, if the process exits first (``exit_code()`` not None)."""
    start = time.monotonic()
    last: object = None
    while time.monotonic() - start < timeout:
        code = exit_code()
        if code is not None:
            raise AssertionError(f"sidecar exited with {code} before ready:\n{tail()}")
        try:
            r = await http.get(f"{base}/readyz")
            if r.status_code == 200:
                return time.monotonic() - start
            last = r.text
        except httpx.TransportError as exc:
            last = exc
        await asyncio.sleep(interval)
    raise AssertionError(f"/readyz not 200 after {timeout}s (last: {last!r}):\n{tail()}")


class Sidecar:
    """One ``sagawire run`` subprocess; its stderr goes to a log file."""

    def __init__(
        self,
        broker_url: str,
        store: str,
        group: str,
        log: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._log_file = log.open("ab")
        self.proc = subprocess.Popen(
            [
                *SAGAWIRE,
                "run",
                "--sagas",
                str(ORDER_SAGA),
                "--broker",
                broker_url,
                "--store",
                store,
                "--http",
                f"127.0.0.1:{self.port}",
                "--group",
                group,
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={
                **os.environ,
                "SAGAWIRE_LOG_LEVEL": os.environ.get(LOG_LEVEL_ENV, "warning"),
                **(env or {}),
            },
        )

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def wait_ready(self, http: httpx.AsyncClient, timeout: float = READY_TIMEOUT) -> float:
        """Poll ``/readyz`` until 200; returns the seconds it took."""
        return await until_ready(http, self.base, self.proc.poll, self.tail, timeout, 0.1)

    async def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM, then wait for the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return await self._wait(timeout, "SIGTERM")

    async def kill(self) -> int:
        self.proc.kill()
        return await self._wait(10.0, "SIGKILL")

    async def _wait(self, timeout: float, what: str) -> int:
        deadline = time.monotonic() + timeout
        while (code := self.proc.poll()) is None:
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(
                    f"sidecar still running {timeout}s after {what}:\n{self.tail()}"
                )
            await asyncio.sleep(0.05)
        self._log_file.close()
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log_file.close()
