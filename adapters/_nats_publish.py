"""The publishing half of the NATS transport: each window of messages is written to
the connection in list order, then its JetStream publish acks are awaited together
(one round trip per window, not per message). See :mod:`adapters.nats` for what this
means for order and retries; the consuming half is :mod:`adapters._nats_consumer`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import nats.errors
from nats.js import JetStreamContext

from adapters._util import retrieve_outcome
from adapters.base import HEADER_ORIGIN, HEADER_REASON, OutgoingMessage
from schemas.errors import TransportError

__all__ = ["HEADER_KEY", "PUBLISH_WINDOW", "fit_dead_letter", "publish_windows"]

HEADER_KEY = "sagawire-key"
"""NATS has no record key: the key travels in this header and comes back as ``Delivery.key``."""

PUBLISH_WINDOW = 1000
"""Messages written before their acks are awaited."""

HEADER_DROPPED = "sagawire-dropped-headers"
"""Names of headers left out because nats-py will not write them (comma-separated)."""

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""A header name nats-py writes (its own check): the server takes others from other
clients (``x/y``), and copying one into a dead letter would fail that publish for good."""


async def publish_windows(
    js: JetStreamContext,
    messages: Sequence[tuple[OutgoingMessage, str]],
    *,
    subject_of: Callable[[str], str],
    stream: str,
    ack_timeout: float,
    lock: asyncio.Lock,
    error: Callable[[BaseException, str], TransportError],
    max_payload: int,
) -> None:
    """Publish ``(message, dedup id)`` pairs in order; raise ``error(...)`` if any ack
    fails or does not come within ``ack_timeout`` seconds (the caller retries the list).

    A message larger than the server's ``max_payload``, headers included, is refused
    here, before anything is written: nats-py checks the body alone, and the server
    answers an oversized one by closing the connection, for good."""
    for message, dedup in messages:
        size = wire_size(message.body, _headers(message, dedup), stream)
        if size > max_payload:
            raise TransportError(
                f"publish to {message.destination!r} refused: {size} bytes with its"
                f" headers, over the server's max_payload of {max_payload}",
                retryable=False,
            )
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


def wire_size(body: bytes, headers: dict[str, str], stream: str) -> int:
    """Bytes of body and header block as the server counts them against max_payload,
    with the ``Nats-Expected-Stream`` header nats-py adds for ``stream=``."""
    headers = {**headers, "Nats-Expected-Stream": stream}
    block = sum(len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items())
    return len(body) + len("NATS/1.0\r\n\r\n") + block


def fit_dead_letter(
    message: OutgoingMessage, dedup: str, *, max_payload: int, stream: str
) -> OutgoingMessage:
    """``message`` (a dead letter: the original bytes, its headers, a reason) made to fit
    ``max_payload`` if it can be: the original's own headers and its key are shed first,
    then the reason is shortened. The body is never cut; if it does not fit even so,
    the message is returned as it is (and the publish refuses it)."""
    if wire_size(message.body, _headers(message, dedup), stream) <= max_payload:
        return message
    for reason_length in (200, 40):
        keep = {
            HEADER_REASON: message.headers.get(HEADER_REASON, "")[:reason_length],
            HEADER_ORIGIN: message.headers.get(HEADER_ORIGIN, ""),
            HEADER_DROPPED: "all: too large for max_payload",
        }
        fitted = replace(message, headers=keep, key=None)
        if wire_size(fitted.body, _headers(fitted, dedup), stream) <= max_payload:
            return fitted
    return message


def _headers(message: OutgoingMessage, dedup: str) -> dict[str, str]:
    """NATS headers for ``message``. Caller ``Nats-*`` headers are dropped: JetStream
    acts on them (``Nats-Rollup`` can purge a subject), and only we decide those; so
    are names nats-py will not write (listed in ``sagawire-dropped-headers``)."""
    headers = {k: v for k, v in message.headers.items() if not k.lower().startswith("nats-")}
    bad = [k for k in headers if k.strip() and not _TOKEN.fullmatch(k.strip())]
    if bad:
        for k in bad:
            del headers[k]
        headers[HEADER_DROPPED] = ",".join(sorted(bad))
    if message.key is not None:
        headers[HEADER_KEY] = message.key
    if dedup:
        headers["Nats-Msg-Id"] = dedup
    return headers
