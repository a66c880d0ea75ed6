"""The publishing half of the NATS transport: each window of messages is written to
the connection in list order, then its JetStream publish acks are awaited together
(one round trip per window, not per message). See :mod:`adapters.nats` for what this
means for order and retries; the consuming half is :mod:`adapters._nats_consumer`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import nats.errors
from nats.js import JetStreamContext

from adapters._util import retrieve_outcome
from adapters.base import OutgoingMessage
from schemas.errors import TransportError

__all__ = ["HEADER_KEY", "PUBLISH_WINDOW", "publish_windows"]

HEADER_KEY = "sagawire-key"
"""NATS has no record key: the key travels in this header and comes back as ``Delivery.key``."""

PUBLISH_WINDOW = 1000
"""Messages written before their acks are awaited."""


async def publish_windows(
    js: JetStreamContext,
    messages: Sequence[tuple[OutgoingMessage, str]],
    *,
    subject_of: Callable[[str], str],
    stream: str,
    ack_timeout: float,
    lock: asyncio.Lock,
    error: Callable[[BaseException, str], TransportError],
) -> None:
    """Publish ``(message, dedup id)`` pairs in order; raise ``error(...)`` if any ack
    fails or does not come within ``ack_timeout`` seconds (the caller retries the list)."""
    for start in range(0, len(messages), PUBLISH_WINDOW):
        window = messages[start : start + PUBLISH_WINDOW]
        acks: list[asyncio.Future[Any]] = []
        try:
            async with lock:  # the lock fixes the order on the wire
                for message, dedup in window:
                    acks.append(
                        await js.publish_async(
                            subject_of(message.destination),
                            message.body,
                            headers=_headers(message, dedup),
                            stream=stream,
                        )
                    )
            confirmed = asyncio.gather(*acks)
            # A publish cancelled here (a stop) cancels the acks below; the gather then
            # ends with that error after we are gone: retrieve it, or asyncio logs it.
            confirmed.add_done_callback(retrieve_outcome)
            await asyncio.wait_for(confirmed, ack_timeout)
        except (nats.errors.Error, TimeoutError) as exc:
            where = window[0][0].destination
            raise error(exc, f"publish of {len(window)} messages to {where!r}") from exc
        finally:
            for fut in acks:
                fut.cancel()


def _headers(message: OutgoingMessage, dedup: str) -> dict[str, str]:
    """NATS headers for ``message``. Caller ``Nats-*`` headers are dropped: JetStream
    acts on them (``Nats-Rollup`` can purge a subject), and only we decide those."""
    headers = {k: v for k, v in message.headers.items() if not k.lower().startswith("nats-")}
    if message.key is not None:
        headers[HEADER_KEY] = message.key
    if dedup:
        headers["Nats-Msg-Id"] = dedup
    return headers
