"""When values one model validated can be carried into another model unchanged.

Two things happen to every event a saga applies, and both copy fields between
models the user declared: a reply's fields are merged into the state
(:func:`shared`), and a command's fields are filled from the state
(:func:`copies_from`). Validating again what was validated already is the costly
part of both, and needless when the target would accept each value as it is. These
functions work out, once per pair of models, whether it would: the same type (or a
union listing it), no constraint the source did not check, no validator, hook or
setting of the target's that would change or reject the value. Where any of that
does not hold, the callers validate as usual; ``tests/test_fast_paths.py`` checks
that both ways give the same result.
"""

from __future__ import annotations

import functools
from types import UnionType
from typing import Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

__all__ = ["copies_from", "shared"]

_SHARED: dict[tuple[type[BaseModel], type[BaseModel]], tuple[tuple[str, ...], bool]] = {}
Copies = tuple[tuple[str, ...], tuple[str, ...]]
"""The fields to copy, and those of them that must not be None at run time."""
_COPIES: dict[tuple[type[BaseModel], type[BaseModel]], Copies | None] = {}


def shared(payload: type[BaseModel], state: type[BaseModel]) -> tuple[tuple[str, ...], bool]:
    """The fields ``payload`` shares with ``state``, and whether their (already validated)
    values can be copied into the state without validating it again: only when the state
    would accept each value unchanged. Worked out once per pair of models: this runs per
    event."""
    key = (payload, state)
    plan = _SHARED.get(key)
    if plan is None:
        pf, sf = payload.model_fields, state.model_fields
        names = tuple(n for n in pf if n in sf)
        same = not _validates_itself(state) and _same_config(payload, state)
        same = same and all(_assignable(pf[n], sf[n]) for n in names)
        plan = _SHARED[key] = (names, same)
    return plan


def copies_from(state: type[BaseModel], command: type[BaseModel]) -> Copies | None:
    """The fields of ``command``, in its order, if every one of them comes from the
    same-named field of ``state`` and the state's serializer writes each value as the
    command's would after validating it: then the command's JSON is the state's, for
    those fields. The second tuple names the fields the state declares ``T | None``
    and the command ``T``: they copy only while their value is not None (None would
    fail the command's validation, as it should). None when anything could differ (a
    field the state lacks, a validator, a serializer, an excluded or computed field, a
    setting of either model that changes what is written)."""
    key = (state, command)
    if key in _COPIES:
        return _COPIES[key]
    sf, cf = state.model_fields, command.model_fields
    names = tuple(cf)
    not_none = tuple(n for n in cf if n in sf and _narrows_none(sf[n], cf[n]))
    plan: Copies | None = (names, not_none)
    if (
        not all(n in sf and (_assignable(sf[n], cf[n]) or n in not_none) for n in cf)
        or _validates_itself(command)
        or not _same_config(state, command)
        or _writes_its_own_way(state)
        or _writes_its_own_way(command)
        or any(cf[n].exclude or sf[n].exclude for n in cf)
    ):
        plan = None
    _COPIES[key] = plan
    return plan


def _narrows_none(source: FieldInfo, target: FieldInfo) -> bool:
    """``source`` is ``T | None`` and ``target`` is ``T`` itself, with no constraint of
    its own: a value of the source that is not None is valid, unchanged, as the target."""
    if target.metadata and target.metadata != source.metadata:
        return False
    s, t = source.annotation, target.annotation
    if get_origin(s) not in (Union, UnionType):
        return False
    members = get_args(s)
    return len(members) == 2 and type(None) in members and t in members


def _validates_itself(model: type[BaseModel]) -> bool:
    """``model`` runs code of its own when validated (field or model validators,
    ``model_post_init``) or keeps values beside its fields (a ``cached_property``, such
    as a cached computed field): a copied value would skip the one and leave the other
    stale."""
    d = model.__pydantic_decorators__
    if d.field_validators or d.model_validators or d.validators or d.root_validators:
        return True
    if model.__pydantic_post_init__ is not None:
        return True
    return any(
        isinstance(v, functools.cached_property) for c in model.__mro__ for v in vars(c).values()
    )


def _writes_its_own_way(model: type[BaseModel]) -> bool:
    """``model`` serializes with code of its own (field or model serializers, computed
    fields): the state's serializer would not write what the command's writes."""
    d = model.__pydantic_decorators__
    return bool(d.field_serializers or d.model_serializers or d.computed_fields)


_STRING_RULES = (
    "str_strip_whitespace",
    "str_to_lower",
    "str_to_upper",
    "str_min_length",
    "str_max_length",
)
"""Model settings that change or reject a string its type alone accepts."""

_WRITING_RULES = (
    "use_enum_values",
    "serialize_by_alias",
    "ser_json_timedelta",
    "ser_json_temporal",
    "ser_json_bytes",
    "ser_json_inf_nan",
)
"""Model settings that change what a value is written as: both models must agree."""


def _same_config(source: type[BaseModel], target: type[BaseModel]) -> bool:
    """``target`` applies no string rule that ``source`` did not already apply, and both
    hold and write values the same way (enums as members or values, aliases, how
    durations, bytes and non-finite floats are written)."""
    s, t = source.model_config, target.model_config
    if any(s.get(k) != t.get(k) for k in _WRITING_RULES):
        return False
    return all(not t.get(k) or t.get(k) == s.get(k) for k in _STRING_RULES)


def _assignable(source: FieldInfo, target: FieldInfo) -> bool:
    """A value validated as ``source`` is valid, unchanged, as ``target``: the same type,
    or a union that lists it (``str | None`` for ``str``), and no constraint of the
    target's (``min_length``, ``gt``, a pattern...) that the source did not check too."""
    if target.metadata and target.metadata != source.metadata:
        return False
    s, t = source.annotation, target.annotation
    if s == t:
        return True
    return get_origin(t) in (Union, UnionType) and s in get_args(t)
