"""Fixtures the transport tests share: the session Kafka broker (Tansu)."""

from __future__ import annotations

from tests.support.kafka import kafka_broker

__all__ = ["kafka_broker"]
