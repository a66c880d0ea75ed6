"""Secrets never leave through URLs in logs or errors."""

from __future__ import annotations

import pytest

from adapters._util import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://guest:s3cret@127.0.0.1:5672/", "amqp://guest:***@127.0.0.1:5672/"),
        ("nats://127.0.0.1:4222?token=s3cret&stream=S", "nats://127.0.0.1:4222?token=***&stream=S"),
        ("kafka://h:9092?sasl_password=s3cret", "kafka://h:9092?sasl_password=***"),
        ("memory://", "memory://"),
        ("kafka://u:s3cret@h1:9092,h2:9092?x=1", "kafka://u:***@h1:9092,h2:9092?x=1"),
        ("nats://s3cret@127.0.0.1:4222", "nats://***@127.0.0.1:4222"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "s3cret" not in redact_url(url)
