"""The contract checks ``sagawire validate`` adds to the load-time ones.

The load-time checks (:mod:`orchestrator.language.checks`) refuse a saga that cannot
run. These look at what a saga says to the rest of the system, where a mistake loads
fine and then fails quietly, message by message:

* **correlate names a field the event does not have** (error). ``correlate="ordr_id"``
  loads, and then every event that arrives without the ``correlationid`` attribute (a
  plain JSON event always does) cannot find its instance: it is parked, then
  dead-lettered. Nothing else would tell the author why. The field must be one of the
  event model's fields (or a property); a model that allows extra fields is not judged.
* **two names one typo apart** (warning), among the events consumed and the messages
  sent by all the sagas validated together: ``payment.chargd`` beside
  ``payment.charged``. A warning, because close names can be meant; a name that is the
  other with something added (``payment.charge`` / ``payment.charged``, the usual
  command / reply pair) is not reported.
* **an event declared and never used** (warning): a state machine's ``events=[...]``
  lists it, no row takes it. The sidecar subscribes to it, and each one that comes is
  parked, then dead-lettered (or recorded as a deviation by a tracker). A warning,
  because it is harmless to the flow, and may be a row not written yet.

Why errors and warnings differ: an error is a saga that will drop messages, so the
validator exits 2; a warning is printed and exits 0 unless ``--strict``.
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel

from orchestrator.language.checks import did_you_mean
from orchestrator.language.loader import Declared
from orchestrator.language.problems import Problem
from orchestrator.language.where import index_of

__all__ = ["CLOSE", "lint"]

CLOSE = 0.75
"""difflib's ratio from which two spellings are one typo apart. Names are compared part
by part (``payment.chargd`` against ``payment.charged``: ``chargd`` / ``charged``, 0.92);
one letter dropped, doubled or swapped in a word of four letters or more scores 0.75
or more, while the shipped sagas' closest distinct words (``reserved`` / ``released``)
score 0.63, and ``x.started`` / ``y.started`` differ by a whole word."""


def lint(declared: Sequence[Declared]) -> list[Problem]:
    """The contract problems of the sagas ``declared`` (see the module docs)."""
    problems: list[Problem] = []
    for d in declared:
        problems += _correlation(d)
        problems += _unused(d)
    problems += _close_names(declared)
    return problems


def _line(d: Declared, found: int | None) -> int | None:
    return found or d.line or index_of(d.file).saga(d.saga.name)


def _readable(model: type[BaseModel], name: str) -> bool:
    """Whether the engine's ``getattr(data, name)`` finds something on a validated
    ``model`` (a field, a computed field, a property), or may (extra fields allowed)."""
    if name in model.model_fields or name in model.model_computed_fields:
        return True
    if model.model_config.get("extra") == "allow":
        return True
    return isinstance(getattr(model, name, None), property)


def _correlation(d: Declared) -> list[Problem]:
    out = []
    for spec in d.saga.events.values():
        field, model = spec.correlate_field, spec.model
        if field is None or model is None or _readable(model, field):
            continue
        plain = spec.plain is not None and spec.plain.correlation_header is None
        who = "every one of these plain JSON events" if plain else "an event that comes"
        who += "" if plain else " without the correlationid attribute"
        fields = ", ".join(model.model_fields) or "none"
        out.append(
            Problem(
                "error",
                f"event {spec.type!r} is correlated by data.{field} (correlate={field!r}),"
                f" but {model.__name__} has no field {field!r} (its fields: {fields}"
                f"{did_you_mean(field, model.model_fields)}), so {who} cannot find its"
                " instance and is dead-lettered",
                d.file,
                _line(d, index_of(d.file).correlate(spec.type, field, d.saga.name)),
                d.saga.name,
            )
        )
    return out


def _unused(d: Declared) -> list[Problem]:
    saga = d.saga
    if saga.flow is not None or saga.kind != "machine":
        return []  # a step saga's events are its steps' replies: each one is used
    taken = {t.event for rows in saga.transitions.values() for t in rows}
    what = (
        "recorded as a deviation" if saga.deviations is not None else "parked, then dead-lettered"
    )
    return [
        Problem(
            "warning",
            f"event {spec.type!r} is declared but no row takes it: the sidecar subscribes"
            f" to it, and each one that comes is {what}; add a When(state, {spec.type!r})"
            " row, or remove it from events=[...]",
            d.file,
            _line(d, index_of(d.file).event(spec.type, saga.name)),
            saga.name,
        )
        for spec in saga.events.values()
        if spec.type not in taken
    ]


@dataclass(frozen=True, slots=True)
class _Use:
    name: str
    what: str  # "event" (consumed) or "message" (sent: a command or an outcome)
    declared: Declared


def _uses(declared: Sequence[Declared]) -> list[_Use]:
    out: list[_Use] = []
    for d in declared:
        out += [_Use(name, "event", d) for name in d.saga.consumes()]
        out += [_Use(name, "message", d) for name in d.saga.produces()]
    return out


def _closeness(a: str, b: str) -> float:
    """How alike ``a`` and ``b`` are as one name, one of them misspelt (0 to 1): the one
    part they differ in is compared (or the whole, if they differ in several or have
    different parts), and a name that is the other with something added is no typo (a
    command and its reply: ``payment.charge`` / ``payment.charged``): 0."""
    pa, pb = a.split("."), b.split(".")
    if len(pa) == len(pb):
        differ = [(x, y) for x, y in zip(pa, pb, strict=True) if x != y]
        if len(differ) == 1:
            a, b = differ[0]
    if a.startswith(b) or b.startswith(a):
        return 0.0
    return difflib.SequenceMatcher(None, a, b).ratio()


def _close_names(declared: Sequence[Declared]) -> list[Problem]:
    """One warning per likely typo, naming the closest other name."""
    by_name: dict[str, list[_Use]] = {}
    for u in _uses(declared):
        by_name.setdefault(u.name, []).append(u)
    best: dict[str, tuple[float, str]] = {}  # typo -> (closeness, meant)
    for a, b in itertools.combinations(by_name, 2):
        score = _closeness(a, b)
        if score < CLOSE:
            continue
        # the name fewer sagas use is the likelier typo; on a tie, the one met later
        typo, meant = (b, a) if len(by_name[b]) <= len(by_name[a]) else (a, b)
        if score > best.get(typo, (0.0, ""))[0]:
            best[typo] = (score, meant)
    problems = []
    for typo, (_, meant) in best.items():
        u, other = by_name[typo][0], by_name[meant][0]
        index = index_of(u.declared.file)
        at = index.event(typo, u.declared.saga.name) or index.send(typo, u.declared.saga.name)
        problems.append(
            Problem(
                "warning",
                f"{u.what} {typo!r} is one typo away from {other.what} {meant!r}"
                f" (saga {other.declared.saga.name!r}): did you mean {meant!r}?",
                u.declared.file,
                _line(u.declared, at),
                u.declared.saga.name,
            )
        )
    return problems
