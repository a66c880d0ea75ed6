"""A saga's state as plain data and back, by field name, the same way on every path.

The engine turns the state into data in three places: to merge a reply into it, to
merge what a user's ``update`` returned, and to store it. Each must give back, when
validated again, the state it started from. Two pydantic defaults break that:
``model_dump`` writes aliases when the model says ``serialize_by_alias`` while the
engine's keys are field names, and it writes computed fields, which a model with
``extra="forbid"`` then refuses (and one with ``extra="allow"`` keeps as a stale extra).
So data is always written by field name without computed fields (``round_trip``), and
read by field name (aliases still accepted: records stored before this was so load).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

__all__ = ["state_dict", "state_from_dict", "state_from_json", "state_json"]


def state_dict(state: BaseModel) -> dict[str, Any]:
    """``state``'s fields as plain Python data, keyed by field name."""
    return state.model_dump(by_alias=False, round_trip=True)


def state_from_dict(model: type[BaseModel], data: dict[str, Any]) -> BaseModel:
    """Validate ``data`` (keyed by field name) as ``model``."""
    return model.model_validate(data, by_name=True)


def state_json(state: BaseModel) -> bytes:
    """``state`` as JSON bytes for the store (``model_dump_json`` minus its wrapper:
    this runs once per transition)."""
    return state.__pydantic_serializer__.to_json(state, by_alias=False, round_trip=True)


def state_from_json(model: type[BaseModel], data: bytes | str) -> BaseModel:
    """The state a record holds, validated as ``model``."""
    return model.model_validate_json(data, by_name=True)
