"""The CloudEvents 1.0 envelope every sagawire message travels in.

Events report facts (``payment.charged``) and commands ask for work
(``payment.charge``); both use this one envelope in structured JSON mode, so a
participant needs nothing but a JSON library to speak to sagawire.

Extension attributes used by sagawire:

* ``correlationid`` — the saga instance's correlation key;
* ``causationid`` — the ``id`` of the message that caused this one;
* ``attempt`` — the send attempt of a retried command (1 for the first send).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["CONTENT_TYPE", "Envelope", "NonEmptyStr"]

CONTENT_TYPE = "application/cloudevents+json"
"""Media type of a structured-mode CloudEvent, as sent in broker headers."""

NonEmptyStr = Annotated[str, Field(min_length=1, strict=True)]

_EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")


class Envelope(BaseModel):
    """One CloudEvent. Immutable; build a new one with :meth:`model_copy`."""

    model_config = ConfigDict(extra="allow", frozen=True, str_strip_whitespace=False)

    specversion: Literal["1.0"]
    id: NonEmptyStr
    source: NonEmptyStr
    type: NonEmptyStr
    time: datetime | None = None
    datacontenttype: NonEmptyStr = "application/json"
    dataschema: NonEmptyStr | None = None
    subject: NonEmptyStr | None = None
    data: Any = None
    correlationid: NonEmptyStr | None = None
    causationid: NonEmptyStr | None = None
    attempt: Annotated[int, Field(ge=1, strict=True)] | None = None

    @model_validator(mode="after")
    def _check_extensions(self) -> Envelope:
        """CloudEvents names extension attributes with lowercase letters and digits only."""
        for name in self.model_extra or {}:
            if not _EXTENSION_NAME.match(name):
                raise ValueError(
                    f"extension attribute {name!r} must be 1-20 lowercase letters or digits"
                )
        if self.time is not None and self.time.tzinfo is None:
            raise ValueError("attribute 'time' must carry a UTC offset (RFC 3339)")
        return self

    @classmethod
    def new(
        cls,
        type: str,
        data: Any,
        *,
        id: str,
        source: str,
        time: datetime | None = None,
        correlationid: str | None = None,
        causationid: str | None = None,
        attempt: int | None = None,
    ) -> Envelope:
        """Build an envelope without re-validating fields we produced ourselves.

        (What ``model_construct`` does, minus its per-field loop: the engine builds one
        of these per emitted message.)"""
        env = cls.__new__(cls)
        _set = object.__setattr__
        _set(
            env,
            "__dict__",
            {
                "specversion": "1.0",
                "id": id,
                "source": source,
                "type": type,
                "time": time or datetime.now(UTC),
                "datacontenttype": "application/json",
                "dataschema": None,
                "subject": None,
                "data": data,
                "correlationid": correlationid,
                "causationid": causationid,
                "attempt": attempt,
            },
        )
        _set(env, "__pydantic_fields_set__", _NEW_FIELDS_SET)
        _set(env, "__pydantic_extra__", {})
        _set(env, "__pydantic_private__", None)
        return env

    def attributes(self) -> dict[str, Any]:
        """Every attribute that is set, ``data`` included, as JSON-ready values.

        Read from ``__dict__`` (the fields) and ``__pydantic_extra__`` directly: this
        runs once per message sent, and ``model_extra`` is a property."""
        d = self.__dict__
        out: dict[str, Any] = {
            "specversion": d["specversion"],
            "id": d["id"],
            "source": d["source"],
            "type": d["type"],
        }
        if d["time"] is not None:
            out["time"] = d["time"]
        out["datacontenttype"] = d["datacontenttype"]
        for name in _OPTIONAL:
            value = d[name]
            if value is not None:
                out[name] = value
        extra = self.__pydantic_extra__
        if extra:
            out.update(extra)
        out["data"] = d["data"]
        return out


_OPTIONAL = ("dataschema", "subject", "correlationid", "causationid", "attempt")
"""Attributes :meth:`Envelope.attributes` leaves out when they are None."""

_NEW_FIELDS_SET = frozenset(
    {"specversion", "id", "source", "type", "time", "data", "correlationid", "causationid"}
)
