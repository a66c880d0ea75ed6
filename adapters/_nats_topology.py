"""What a :class:`~adapters.base.Topology` means on JetStream: pure functions, no I/O.

* One stream (file storage, limits retention) whose subjects are the union of
  every destination any sidecar declared. Subjects are only ever added, never
  removed, because other sidecars sharing the stream may need them.
* One durable pull consumer per consumer group, filtered on the consumed
  subjects (nats-server >= 2.10, ``filter_subjects``). Older servers cannot
  filter one consumer on several subjects — and silently ignore the field,
  which would deliver the whole stream — so there we create one consumer per
  consumed subject instead, named after the group and the subject.

Upgrading a server from 2.9 to 2.10 therefore switches a multi-subject group to
a new consumer that starts from the beginning of the stream; the engine's inbox
makes the replay harmless but slow, so delete the old per-subject consumers and
create the group consumer by hand (``nats consumer add``) before upgrading if the
stream is large.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from nats.js import api

from adapters.base import Topology
from schemas.errors import DeclarationError

__all__ = [
    "ConsumerPlan",
    "check_stream",
    "consumer_plans",
    "missing_subjects",
    "new_stream_config",
    "subject_matches",
]

_NAME_OK = re.compile(r"[A-Za-z0-9_-]+")
_MAX_NAME = 96


@dataclass(frozen=True, slots=True)
class ConsumerPlan:
    """One durable consumer to create, or to update in place (JetStream takes a new
    ``ack_wait``, ``max_deliver`` or ``max_ack_pending`` for an existing durable), and
    pull from."""

    name: str
    subjects: tuple[str, ...]

    def config(
        self,
        *,
        ack_wait: float,
        max_deliver: int,
        max_ack_pending: int,
        deliver: api.DeliverPolicy = api.DeliverPolicy.ALL,
    ) -> api.ConsumerConfig:
        one = len(self.subjects) == 1
        return api.ConsumerConfig(
            name=self.name,
            durable_name=self.name,
            deliver_policy=deliver,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            max_deliver=max_deliver,
            max_ack_pending=max_ack_pending,
            filter_subject=self.subjects[0] if one else None,
            filter_subjects=None if one else list(self.subjects),
        )


def consumer_name(*parts: str) -> str:
    """A valid, stable consumer name from ``parts``. Characters NATS forbids (``.``,
    ``*``, ``>``, spaces...) become ``_`` and a short hash of the original is appended
    so that ``a.b`` and ``a_b`` never share a consumer."""
    raw = "__".join(parts)
    if _NAME_OK.fullmatch(raw) and len(raw) <= _MAX_NAME:
        return raw
    digest = hashlib.sha1(raw.encode()).hexdigest()[:10]
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "_", raw)[: _MAX_NAME - 11]
    return f"{cleaned}-{digest}"


def consumer_plans(topology: Topology, *, multi_filter: bool) -> list[ConsumerPlan]:
    """The consumers ``topology`` needs: one per group when the server can filter
    on several subjects, else one per consumed subject."""
    if not topology.consumes:
        return []
    if multi_filter or len(topology.consumes) == 1:
        return [ConsumerPlan(consumer_name(topology.group), tuple(topology.consumes))]
    return [ConsumerPlan(consumer_name(topology.group, s), (s,)) for s in topology.consumes]


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, a final ``>`` one or more."""
    p_tokens, s_tokens = pattern.split("."), subject.split(".")
    for i, p in enumerate(p_tokens):
        if p == ">":
            return len(s_tokens) > i
        if i >= len(s_tokens) or (p != "*" and p != s_tokens[i]):
            return False
    return len(p_tokens) == len(s_tokens)


def missing_subjects(existing: Iterable[str], wanted: Sequence[str]) -> list[str]:
    """The ``wanted`` subjects no ``existing`` stream subject covers yet (adding a
    subject a wildcard already covers is an error on the server)."""
    have = list(existing)
    return [s for s in dict.fromkeys(wanted) if not any(subject_matches(p, s) for p in have)]


def new_stream_config(name: str, subjects: Sequence[str], *, max_age: float) -> api.StreamConfig:
    """The stream we create when none exists. Limits retention keeps a command sent
    to a service that has not declared its consumer yet; ``max_age`` bounds disk."""
    return api.StreamConfig(
        name=name,
        subjects=list(dict.fromkeys(subjects)),
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        discard=api.DiscardPolicy.OLD,
        max_age=max_age,
        duplicate_window=120.0,
    )


def check_stream(config: api.StreamConfig, where: str) -> None:
    """Raise :class:`DeclarationError` if an existing stream cannot carry sagawire."""
    name = config.name
    problems: list[str] = []
    if config.retention == api.RetentionPolicy.WORK_QUEUE:
        problems.append(
            "it has work-queue retention, which allows one consumer per subject; every "
            "consumer group and the dead-letter reader must see each message "
            "(use limits or interest retention)"
        )
    if config.storage == api.StorageType.MEMORY:
        problems.append("it has memory storage, which loses messages on a restart (use file)")
    if config.no_ack:
        problems.append("it does not acknowledge publishes (no_ack), so nothing is confirmed")
    if config.sealed:
        problems.append("it is sealed, so nothing can be published to it")
    if config.mirror is not None:
        problems.append("it is a mirror, which cannot be published to")
    if problems:
        raise DeclarationError(
            f"JetStream stream {name!r} on {where} cannot be used: "
            + "; ".join(problems)
            + ". Pick another stream with ?stream=NAME or fix this one by hand."
        )
