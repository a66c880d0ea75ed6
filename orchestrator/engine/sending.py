"""What a transition sends: each message's id, its data, its CloudEvent attributes.

Shared by the two ways a transition is decided (rows: :mod:`orchestrator.engine.decide`;
a flow of steps: :mod:`orchestrator.engine.flow`), so that a command is the same
message, with the same id, whichever built it. Pure: no I/O, no clock (``now`` is
given), no randomness.

Ids are derived, never drawn (uuid5), so replaying the same input yields the same
output, byte for byte, and a command re-published after a crash keeps its id. A
counted command (a step's command or compensation, see :attr:`SendSpec.attempt_key`)
is one logical command however often it is sent: its id comes from the instance and
the attempt key (:func:`command_id`), the same on every attempt, and only its
``attempt`` grows. Any other message's id comes from the message that caused it
(:func:`message_id`).
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from orchestrator.engine.model import Message
from orchestrator.language.definition import Context, SendSpec

if TYPE_CHECKING:
    from _hashlib import HASH

__all__ = ["command_id", "message", "message_id", "payload", "when"]

_NAMESPACE = uuid.UUID("6f1c3a9e-3b7d-4f7e-9a55-5a6177697265")


_NS_SHA1 = hashlib.sha1(_NAMESPACE.bytes)
"""SHA-1 already fed the namespace: each id copies it and hashes only its own name."""
_VARIANT = {c: "89ab"[int(c, 16) & 0x3] for c in "0123456789abcdef"}
"""The RFC 4122 variant bits set on a hex digit: what ``uuid.UUID(version=5)`` does."""


def message_id(cause: str, saga: str, index: int) -> str:
    """Deterministic id of the ``index``-th message caused by message ``cause``.

    The same value as ``str(uuid.uuid5(namespace, ...))``, computed on the hex digest
    (version digit, variant digit) without building a UUID object: this runs once per
    emitted message."""
    sha = _NS_SHA1.copy()
    sha.update(f"{cause}/{saga}/{index}".encode())
    h = sha.hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


_COMMAND_NAMESPACE = uuid.UUID("0d7c5a41-8e2b-4c6f-b1a3-636f6d6d616e")
_KEYED: dict[tuple[str, str], HASH] = {}
"""SHA-1 already fed the command namespace, the saga and the attempt key, per pair."""


def command_id(saga: str, key: str, correlation_id: str) -> str:
    """The id of counted command ``key`` of instance ``correlation_id`` of ``saga``: the
    same on every attempt, so a participant that de-duplicates on it acts once.

    ``str(uuid.uuid5(command namespace, f"{len(saga)}:{saga}{len(key)}:{key}{cid}"))``
    (lengths make the name unambiguous whatever the names hold; hashing keeps the id 36
    characters however long the correlation id). One logical command per (instance, key):
    an instance is never deleted, so its correlation id names it for good, and a step's
    command and its compensation (``undo:<step>``) are each sent in one run of attempts
    only, the step form having no loops (the state-machine form counts no attempts)."""
    prefix = _KEYED.get((saga, key))
    if prefix is None:
        prefix = hashlib.sha1(
            _COMMAND_NAMESPACE.bytes + f"{len(saga)}:{saga}{len(key)}:{key}".encode()
        )
        _KEYED[(saga, key)] = prefix
    sha = prefix.copy()
    sha.update(correlation_id.encode())
    h = sha.hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


_last_when: tuple[float, datetime] = (0.0, datetime.fromtimestamp(0.0, UTC))


def when(now: float) -> datetime:
    """``datetime.fromtimestamp(now, UTC)``, kept for the last ``now``: the engine decides
    a whole batch at one ``now``, and this runs per event. The pair is replaced in one
    assignment, so engines on several threads never see one's time with another's."""
    global _last_when
    last = _last_when
    if last[0] == now:
        return last[1]
    when = datetime.fromtimestamp(now, UTC)
    _last_when = (now, when)
    return when


_SOURCES: dict[str, str] = {}
"""``sagawire/<saga>``, the ``source`` of what each saga sends, made once per saga."""


def payload(send: SendSpec, ctx: Context) -> Any:
    """The JSON-ready data of ``send`` in ``ctx``: straight from the state's serializer
    where that writes what the command's model would (``send.dump``), else built,
    validated into its model and dumped."""
    if send.dump is not None:
        return send.dump(ctx)
    data = send.build(ctx)
    if not isinstance(data, BaseModel) and send.model is not None:
        # as build_from_state does: the validator itself, so both paths agree
        data = send.model.__pydantic_validator__.validate_python(data, by_name=True)
    if isinstance(data, BaseModel):  # model_dump(mode="json"), minus its wrapper
        return data.__pydantic_serializer__.to_python(data, mode="json")
    if data is not None:
        # a builder's own data (a Decimal, a datetime...) made JSON here, where a
        # value that cannot be rejects the event instead of failing the commit
        return to_jsonable_python(data)
    return None


def message(
    send: SendSpec, ctx: Context, saga: str, mid: str, attempt: int | None, at: datetime
) -> Message:
    """The message ``send`` makes in ``ctx``, with id ``mid``, caused by ``ctx``'s event."""
    source = _SOURCES.get(saga) or _SOURCES.setdefault(saga, f"sagawire/{saga}")
    return Message(
        send.type,
        mid,
        payload(send, ctx),
        source,
        at,
        ctx.correlation_id,
        ctx.envelope.id,
        attempt,
    )
