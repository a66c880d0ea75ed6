"""The ring yardstick's private namespace on each broker: its messages must never reach
the engine's durable consumer."""

from __future__ import annotations

import pytest

from orchestrator.tooling.bench_ring import ring_url
from schemas.errors import ConfigError


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("memory://", "memory://-ring"),
        ("memory://bench", "memory://bench-ring"),
        (
            "kafka://127.0.0.1:9092?partitions=3",
            "kafka://127.0.0.1:9092?partitions=3&topic_prefix=swring.",
        ),
        ("kafka://h:1?topic_prefix=prod.", "kafka://h:1?topic_prefix=prod.swring."),
        (
            "nats://127.0.0.1:4222",
            "nats://127.0.0.1:4222?subject_prefix=swring&stream=SAGAWIRE_RING",
        ),
        (
            "nats://u:p@h:4222?stream=S&subject_prefix=a.b",
            "nats://u:p@h:4222?stream=S_RING&subject_prefix=a.b.swring",
        ),
        (
            "amqp://guest:guest@127.0.0.1:5672/?exchange=x",
            "amqp://guest:guest@127.0.0.1:5672/?exchange=x.ring&queue_prefix=sagawire.ring",
        ),
    ],
)
def test_ring_url_is_a_namespace_of_its_own(url: str, expected: str) -> None:
    assert ring_url(url) == expected


def test_ring_url_refuses_an_unknown_scheme() -> None:
    with pytest.raises(ConfigError, match="--ring"):
        ring_url("mqtt://127.0.0.1:1883")
