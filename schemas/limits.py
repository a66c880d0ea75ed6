"""How large an incoming message and its attributes may be.

Why limits at the door: every attribute of an event can end up somewhere with a hard
size limit of its own. A correlation id becomes a header and a record key of every
command the saga sends (NATS refuses headers over 64 KiB, AMQP routing keys are at
most 255 bytes, Kafka keys count against the record size), and the whole message
may be stored, parked and dead-lettered. Refused at decode, such a message is a
dead letter with a reason the sender can act on; let through, it is a command the
broker refuses for good, long after the sender is gone.

The defaults sit well under every broker's own limit (NATS ``max_payload`` 1 MiB,
Kafka ``message.max.bytes`` ~1 MiB, RabbitMQ 128 MiB) and far above what a saga
event needs. ``sagawire run`` sets them with ``--max-message-bytes`` and
``--max-attribute-bytes`` (``SAGAWIRE_MAX_MESSAGE_BYTES``, ``SAGAWIRE_MAX_ATTRIBUTE_BYTES``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas.errors import LimitError

__all__ = ["DEFAULT_LIMITS", "Limits"]

_CHECKED = ("id", "source", "type", "subject", "dataschema", "correlationid", "causationid")
"""String attributes whose length is checked (``data`` counts toward the message size)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Largest message (bytes on the wire) and largest attribute value (UTF-8 bytes)."""

    max_message_bytes: int = 256 * 1024
    max_attribute_bytes: int = 1024

    def __post_init__(self) -> None:
        if self.max_message_bytes < 1024 or self.max_attribute_bytes < 64:
            raise ValueError(
                "limits too small to carry a CloudEvent: max_message_bytes >= 1024 and"
                f" max_attribute_bytes >= 64 (got {self.max_message_bytes},"
                f" {self.max_attribute_bytes})"
            )

    def check_size(self, body: bytes) -> None:
        """LimitError if ``body`` is larger than :attr:`max_message_bytes`."""
        if len(body) > self.max_message_bytes:
            raise LimitError(
                f"message of {len(body)} bytes is larger than the limit of"
                f" {self.max_message_bytes} bytes (max_message_bytes)"
            )

    def check_wire_size(self, size: int) -> None:
        """LimitError if a message of ``size`` bytes, its body and headers together (a
        binary-mode or plain message, whose attributes are headers), is too large."""
        if size > self.max_message_bytes:
            raise LimitError(
                f"message of {size} bytes (body and headers) is larger than the limit of"
                f" {self.max_message_bytes} bytes (max_message_bytes)"
            )

    def check_attributes(self, attributes: dict[str, Any], extra: dict[str, Any] | None) -> None:
        """LimitError naming the first attribute longer than :attr:`max_attribute_bytes`.

        Cheap for the common case: a string of n characters has at most 4n UTF-8 bytes,
        so only a string longer than a quarter of the limit is encoded to be measured."""
        limit = self.max_attribute_bytes
        quick = limit // 4
        for name in _CHECKED:
            value = attributes.get(name)
            if type(value) is str and len(value) > quick:
                self._measure(name, value, limit)
        if extra:
            for name, value in extra.items():
                if type(value) is str and len(value) > quick:
                    self._measure(name, value, limit)

    @staticmethod
    def _measure(name: str, value: str, limit: int) -> None:
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > limit:
            raise LimitError(
                f"attribute {name!r} is {size} bytes, larger than the limit of {limit}"
                f" bytes (max_attribute_bytes): {value[:40]!r}..."
            )


DEFAULT_LIMITS = Limits()
