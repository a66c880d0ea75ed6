"""What a service sends for a handler's outcome, and how its replies are kept.

A handler returns an :class:`~orchestrator.client.events.Emit`, a list of them, None
or :data:`~orchestrator.client.handlers.IGNORE`; :func:`replies_for` turns that into the
messages to publish, each keyed like its cause, with ids derived from the cause so a
redelivery re-publishes the same replies. :func:`compact` trims what the in-memory
reply memory keeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from orchestrator.client.events import Emit, Mode, reply_event, reply_message, to_message
from orchestrator.client.handlers import IGNORE, Outcome
from orchestrator.client.replies import Sent
from schemas.envelope import Envelope

__all__ = ["compact", "replies_for"]


def replies_for(
    env: Envelope,
    result: Outcome,
    *,
    service: str,
    source: str,
    mode: Mode,
    now: datetime,
    key: str | None,
) -> Sent:
    """The messages to send for ``result``, the outcome of handling ``env``."""
    key = env.correlationid or key
    if type(result) is Emit and mode == "structured":  # the common case, in short
        return (reply_message(env, result, source=source, index=0, now=now, key=key),)
    if result is None or result is IGNORE:
        return ()
    emits: Sequence[Emit] = (result,) if isinstance(result, Emit) else result
    if isinstance(emits, str | bytes) or not all(isinstance(e, Emit) for e in emits):
        raise TypeError(
            f"a handler of service {service!r} returned {result!r}: return an Emit, a"
            " list of them, None or IGNORE"
        )
    if mode == "structured":
        return tuple(
            reply_message(env, e, source=source, index=i, now=now, key=key)
            for i, e in enumerate(emits)
        )
    return tuple(
        to_message(reply_event(env, e, source=source, index=i), mode=mode, key=key)
        for i, e in enumerate(emits)
    )


def compact(sent: Sent) -> Sent:
    """Replies as kept in memory: a body copied to its own size (orjson's output holds a
    4 KiB buffer whatever its length, which would make each memory entry cost 4 KiB)."""
    for m in sent:
        m.body = bytes(memoryview(m.body))
    return sent
