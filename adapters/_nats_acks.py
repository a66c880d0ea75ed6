"""JetStream publish acks, collected by the transport itself.

A JetStream publish is a core NATS publish with a reply subject; the stream answers
there with a publish ack, or with an error naming why it refused *that* message
(``header size exceeds maximum allowed of 64k``, ``message size exceeds maximum
allowed``). nats-py's ``publish_async`` loses those errors: its reply handler calls
``APIError.from_error``, which raises instead of returning, so the exception escapes
into the subscription task and the ack future never resolves
(nats-io/nats.py#985, open). A refused message then looked like a timeout, the
caller retried it every ``publish_timeout`` forever and the outbox was poisoned. So
:class:`AckInbox` owns one wildcard inbox subscription per connection and resolves
each publish's future itself: with ``None``, or with the JetStream error as nats-py
would have raised it (``BadRequestError`` with ``err_code`` and ``description``), or
``NoStreamResponseError`` when no stream listens on the subject.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

__all__ = ["AckInbox"]

_STATUS = "Status"
_NO_RESPONDERS = "503"
_TOKEN_DIGITS = 20
"""Upper bound on the length of a token this inbox appends to its prefix."""


class AckInbox:
    """One reply subscription ``<inbox>.*`` and the publishes waiting on it."""

    def __init__(self) -> None:
        self._nc: NATS | None = None
        self._prefix = ""
        self._tokens = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self._opening = asyncio.Lock()

    async def open(self, nc: NATS) -> None:
        """Subscribe on ``nc`` once (nats-py re-subscribes after a reconnect)."""
        if self._nc is nc:
            return
        async with self._opening:  # two first publishes at once subscribe once
            if self._nc is not nc:
                prefix = nc.new_inbox()
                await nc.subscribe(f"{prefix}.*", cb=self._on_reply)
                self._nc, self._prefix = nc, prefix

    @property
    def reply_length(self) -> int:
        """The longest reply subject :meth:`expect` hands out, for size checks."""
        return len(self._prefix) + 1 + _TOKEN_DIGITS

    def expect(self) -> tuple[str, asyncio.Future[None]]:
        """A reply subject for one publish and the future its ack resolves."""
        token = str(next(self._tokens))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        return f"{self._prefix}.{token}", future

    def forget(self, reply: str) -> None:
        """Stop waiting for ``reply`` (timed out or cancelled): a late ack is dropped."""
        future = self._waiting.pop(reply.rpartition(".")[2], None)
        if future is not None and not future.done():
            future.cancel()

    async def _on_reply(self, msg: Msg) -> None:
        future = self._waiting.pop(msg.subject.rpartition(".")[2], None)
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get(_STATUS) == _NO_RESPONDERS:
            future.set_exception(nats.js.errors.NoStreamResponseError())
            return
        try:
            response: Any = json.loads(msg.data)
        except ValueError:
            future.set_exception(nats.js.errors.APIError(description=f"bad ack {msg.data!r}"))
            return
        error = response.get("error") if isinstance(response, dict) else None
        if error:
            future.set_exception(_api_error(error))
        else:
            future.set_result(None)


def _api_error(error: dict[str, Any]) -> nats.js.errors.APIError:
    """The exception nats-py builds for a JetStream error response, whether its
    ``from_error`` raises it (today) or returns it (once fixed)."""
    try:
        built: object = nats.js.errors.APIError.from_error(error)
    except nats.js.errors.APIError as exc:
        return exc
    if isinstance(built, nats.js.errors.APIError):
        return built
    return nats.js.errors.APIError(
        code=error.get("code"), description=error.get("description"), err_code=error.get("err_code")
    )
