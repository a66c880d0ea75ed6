"""The publishing half of the NATS transport: each window of messages is written to
the connection in list order, then its JetStream publish acks are awaited together
(one round trip per window, not per message). See :mod:`adapters.nats` for what this
means for order and retries; the consuming half is :mod:`adapters._nats_consumer`.

Refusals. A message the server can never take is left out and named in a
:class:`~schemas.errors.PublishRefused` raised after the others are confirmed:

* checked here, before anything is written, because the server answers them by
  closing the connection (for good, in nats-py) or by mis-routing: a subject that is
  not a literal NATS subject (empty tokens, wildcards, whitespace), a control line
  (``HPUB <subject> <reply> <sizes>``) over the server's ``max_control_line``, and
  body plus headers over its ``max_payload``;
* refused by the stream in the message's own publish ack (:data:`REFUSALS`): headers
  over 64 KiB, a message over the stream's ``max_msg_size``.

Everything else (no ack in time, the connection lost, no stream listening, a stream
that is full) is a retryable :class:`TransportError` for the whole call.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS

from adapters._nats_acks import AckInbox
from adapters._util import retrieve_outcome
from adapters.base import HEADER_ORIGIN, HEADER_REASON, OutgoingMessage
from schemas.errors import PublishRefused, TransportError

__all__ = [
    "HEADER_KEY",
    "PUBLISH_WINDOW",
    "REFUSALS",
    "Publisher",
    "fit_dead_letter",
    "wire_size",
]

HEADER_KEY = "sagawire-key"
"""NATS has no record key: the key travels in this header and comes back as ``Delivery.key``."""

PUBLISH_WINDOW = 1000
"""Messages written before their acks are awaited."""

HEADER_DROPPED = "sagawire-dropped-headers"
"""Names of headers left out because nats-py will not write them (comma-separated)."""

MAX_CONTROL_LINE = 4096
"""nats-server's default ``max_control_line``: the ``HPUB`` line (subject, reply inbox,
sizes) must fit, or the server answers ``maximum control line exceeded`` and closes
the connection. Not announced by the server, so the default is assumed."""

REFUSALS = {
    10054: "message size exceeds the stream's max_msg_size",
    10097: "headers over 64 KiB",
}
"""JetStream error codes of a publish ack that refuse that one message for good; any
other error (a full stream, a stream bound elsewhere, JetStream unavailable) may
pass and is retried."""

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""A header name nats-py writes (its own check): the server takes others from other
clients (``x/y``), and copying one into a dead letter would fail that publish for good."""

_NOT_IN_SUBJECT = re.compile(r"[\x00-\x20\x7f]")

_Prepared = tuple[OutgoingMessage, str, dict[str, str]]
"""A message to write: itself, its subject and its NATS headers."""


@dataclass(eq=False)
class Publisher:
    """Publishes ``(message, dedup id)`` pairs to one stream over one connection."""

    stream: str
    subject_of: Callable[[str], str]
    ack_timeout: float
    error: Callable[[BaseException, str], TransportError]
    lock: asyncio.Lock
    """Fixes the order on the wire across concurrent publishes of one connection."""

    def __post_init__(self) -> None:
        self._acks = AckInbox()

    async def publish(self, nc: NATS, messages: Sequence[tuple[OutgoingMessage, str]]) -> None:
        """Publish in order; raise ``error(...)`` (retryable) if any ack fails for a
        reason that may pass or does not come within ``ack_timeout``, else
        :class:`PublishRefused` for the messages the server refuses for good."""
        await self._acks.open(nc)
        refused: dict[str, str] = {}
        sendable: list[_Prepared] = []
        for message, dedup in messages:
            subject = self.subject_of(message.destination)
            headers = _headers(message, dedup)
            reason = self._refusal(subject, message.body, headers, nc.max_payload)
            if reason is None:
                sendable.append((message, subject, headers))
            else:
                refused[message.message_id] = reason
        for start in range(0, len(sendable), PUBLISH_WINDOW):
            refused |= await self._window(nc, sendable[start : start + PUBLISH_WINDOW])
        if refused:
            raise PublishRefused(refused)

    async def _window(self, nc: NATS, window: Sequence[_Prepared]) -> dict[str, str]:
        """Write ``window``, await its acks; the refused messages' reasons."""
        replies: list[str] = []
        acks: list[asyncio.Future[None]] = []
        where = window[0][0].destination
        try:
            async with self.lock:  # the lock fixes the order on the wire
                for message, subject, headers in window:
                    reply, ack = self._acks.expect()
                    replies.append(reply)
                    acks.append(ack)
                    # a plain publish: name the stream we mean, as js.publish would
                    headers["Nats-Expected-Stream"] = self.stream
                    await nc.publish(subject, message.body, reply, headers)
            confirmed = asyncio.gather(*acks, return_exceptions=True)
            # A publish cancelled here (a stop) cancels the acks below; the gather then
            # ends with that error after we are gone: retrieve it, or asyncio logs it.
            confirmed.add_done_callback(retrieve_outcome)
            results = await asyncio.wait_for(confirmed, self.ack_timeout)
        except (nats.errors.Error, TimeoutError) as exc:
            raise self.error(exc, f"publish of {len(window)} messages to {where!r}") from exc
        finally:
            for reply in replies:
                self._acks.forget(reply)
        refused: dict[str, str] = {}
        for (message, _, _), result in zip(window, results, strict=True):
            if result is None:
                continue
            reason = _refused_by_stream(result)
            if reason is None:
                doing = f"publish of {len(window)} messages to {where!r}"
                raise self.error(result, doing) from result
            refused[message.message_id] = reason
        return refused

    def _refusal(
        self, subject: str, body: bytes, headers: dict[str, str], max_payload: int
    ) -> str | None:
        """Why the server would refuse this message for good, checked before sending."""
        if not _literal_subject(subject):
            return (
                f"subject {subject[:200]!r} is not a valid NATS subject to publish to"
                " (empty tokens, wildcards '*'/'>' or whitespace)"
            )
        line = len("HPUB ") + len(subject.encode()) + self._acks.reply_length + 2 * 11 + 4
        if line > MAX_CONTROL_LINE:
            return (
                f"subject of {len(subject.encode())} bytes makes a {line}-byte HPUB line, over"
                f" the server's max_control_line of {MAX_CONTROL_LINE} (it would close the"
                " connection)"
            )
        size = wire_size(body, headers, self.stream)
        if size > max_payload:
            return f"{size} bytes with its headers, over the server's max_payload of {max_payload}"
        return None


def _refused_by_stream(exc: BaseException) -> str | None:
    """The stream's reason if ``exc`` is a publish ack refusing that message for good."""
    if isinstance(exc, nats.js.errors.APIError) and exc.err_code in REFUSALS:
        return (
            f"JetStream refused it: {exc.description} (err_code {exc.err_code}:"
            f" {REFUSALS[exc.err_code]})"
        )
    return None


@functools.lru_cache(maxsize=4096)
def _literal_subject(subject: str) -> bool:
    """A subject one may publish to: non-empty tokens, no wildcard token, no
    whitespace or control characters (the server would mis-parse or mis-route it)."""
    if not subject or _NOT_IN_SUBJECT.search(subject):
        return False
    return all(token and token not in ("*", ">") for token in subject.split("."))


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
