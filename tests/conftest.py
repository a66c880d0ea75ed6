"""Shared pytest configuration."""

from __future__ import annotations

import os

pytest_plugins = [
    "tests.support.kafka",  # the session Tansu broker fixture: kafka_broker
    "tests.support.postgres",  # a fresh database per test: database_url
    "tests.support.nats_server",  # a throw-away nats-server >= 2.10: modern_nats
]

os.environ.setdefault("SAGAWIRE_LOG_LEVEL", "warning")

from orchestrator.sidecar.logs import configure_logging  # noqa: E402 - after the env default

configure_logging("warning", json=False)
