"""CloudEvents binary content mode: the attributes in headers, ``data`` as the body.

Every CloudEvents protocol binding puts an event on a message in one of two modes:
*structured* (the whole event as one JSON document, :mod:`schemas.codec`) or *binary*
(each attribute in a header of its own, ``data`` as the message body, ``content-type``
its media type). The bindings differ only in the header prefix and in how a value is
written:

=========  ===============================  ============================  ==================
binding    attribute ``id`` travels as       values                        ``datacontenttype``
=========  ===============================  ============================  ==================
HTTP       ``ce-id`` (any case)              percent-encoded               ``content-type``
NATS       ``ce-id`` (any case)              percent-encoded               ``ce-datacontenttype``
Kafka      ``ce_id``                         as they are (UTF-8)           ``content-type``
AMQP       ``cloudEvents_id`` (or ``:``)     as they are (or AMQP types)   ``content-type``
=========  ===============================  ============================  ==================

**Reading** (:func:`decode_binary`) takes any of these prefixes on any broker, since a
foreign service may use another binding's: the prefix is matched ignoring case, and the
attribute name after it too where the binding says header names are case-insensitive
(``ce-``); values under ``ce-`` are percent-decoded, the others are taken as they are.
``datacontenttype`` is its attribute header if there is one, else ``content-type``. The
result is the same :class:`~schemas.envelope.Envelope` a structured message gives,
validated the same way and within the same :class:`~schemas.limits.Limits`.

**Writing** (:func:`encode_binary`, :func:`to_binary`) gives the *neutral* form, the HTTP
binding's (``ce-`` names, percent-encoded values, ``content-type``): what an outbox row
stores and what the in-memory broker carries. Each broker adapter renames it to its own
binding when it publishes (:func:`to_binding` with :data:`KAFKA`, :data:`NATS` or
:data:`AMQP`), so that the same row can be published on any broker.

``data`` is read as JSON when its media type is JSON (``application/json``, ``*+json``,
or none given), as text for ``text/*``; sagawire refuses other media types (a dead
letter saying so), since saga payloads are JSON.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson
from pydantic import ValidationError
from pydantic_core import to_json

from schemas.codec import decode_json, describe_validation_error
from schemas.envelope import Envelope
from schemas.errors import DecodeError, EnvelopeError
from schemas.limits import DEFAULT_LIMITS, Limits

__all__ = [
    "AMQP",
    "CONTENT_TYPE_HEADER",
    "HTTP",
    "KAFKA",
    "NATS",
    "NEUTRAL_SPECVERSION",
    "Binding",
    "binary_prefix",
    "decode_binary",
    "encode_binary",
    "header",
    "read_data",
    "to_binary",
    "to_binding",
]


@dataclass(frozen=True, slots=True)
class Binding:
    """How one protocol binding writes binary mode: the attribute header prefix, whether
    values are percent-encoded, and whether ``datacontenttype`` goes in ``content-type``
    (else under the prefix, as NATS wants, since there ``content-type`` says structured)."""

    name: str
    prefix: str
    percent: bool
    content_type: bool


HTTP = Binding("http", "ce-", percent=True, content_type=True)
"""The neutral form: what :func:`encode_binary` writes and outbox rows store."""
KAFKA = Binding("kafka", "ce_", percent=False, content_type=True)
NATS = Binding("nats", "ce-", percent=True, content_type=False)
AMQP = Binding("amqp", "cloudEvents_", percent=False, content_type=True)

NEUTRAL_SPECVERSION = "ce-specversion"
"""The header that marks a message in the neutral binary form (adapters test for it)."""

CONTENT_TYPE_HEADER = "content-type"

_READ_PREFIXES = (
    ("ce-", True),  # HTTP, NATS: names case-insensitive, values percent-encoded
    ("ce_", False),  # Kafka
    ("cloudevents_", False),  # AMQP (preferred separator)
    ("cloudevents:", False),  # AMQP (the other one)
)
"""Lower-cased prefixes :func:`decode_binary` reads, each with whether it is a binding
of case-insensitive names and percent-encoded values."""

_SPECVERSION = frozenset(p + "specversion" for p, _ in _READ_PREFIXES)

_NOT_ATTRIBUTES = frozenset({"data", "data_base64"})

_PERCENT_SAFE = frozenset(chr(c) for c in range(0x21, 0x7F)) - {'"', "%"}
"""Printable ASCII but ``"`` and ``%``: written as they are in a percent-encoded value."""


# -- detection ---------------------------------------------------------------------


def binary_prefix(headers: Mapping[str, str]) -> str | None:
    """The prefix (lower-cased) under which ``headers`` carry ``specversion``: the
    message is a binary-mode CloudEvent. None: it is not (structured, or no CloudEvent)."""
    for name in headers:
        low = name.lower()
        if low in _SPECVERSION:
            return low[: -len("specversion")]
    return None


def header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header ``name``, matched exactly, else ignoring case (brokers and
    client libraries do not agree on the case of ``content-type``)."""
    value = headers.get(name)
    if value is not None:
        return value
    low = name.lower()
    for key, value in headers.items():
        if key.lower() == low:
            return value
    return None


# -- reading -----------------------------------------------------------------------


def decode_binary(
    headers: Mapping[str, str], body: bytes, limits: Limits = DEFAULT_LIMITS
) -> Envelope:
    """The envelope of a binary-mode CloudEvent: attributes from ``headers``, ``data``
    from ``body``. Raises what :func:`schemas.codec.decode` raises for the same faults:
    :class:`~schemas.errors.LimitError` (checked first), :class:`DecodeError` (data that
    is not what its media type says), :class:`EnvelopeError` (naming each attribute and
    the header it came from)."""
    limits.check_wire_size(len(body) + sum(len(k) + len(v) for k, v in headers.items()))
    attributes, prefix = _attributes(headers)
    content_type = attributes.pop("datacontenttype", None)
    if content_type is None:
        content_type = header(headers, CONTENT_TYPE_HEADER)
    if content_type is not None:
        attributes["datacontenttype"] = content_type
    attempt = attributes.get("attempt")
    if isinstance(attempt, str):
        if not attempt.isdigit():
            raise EnvelopeError(
                f"invalid CloudEvent in binary mode: attribute 'attempt' (header"
                f" {prefix}attempt) is {attempt[:40]!r}, not a positive integer"
            )
        attributes["attempt"] = int(attempt)
    attributes["data"] = read_data(body, content_type)
    try:
        envelope = Envelope.model_validate(attributes)
    except ValidationError as exc:
        raise EnvelopeError(
            f"invalid CloudEvent in binary mode (headers {prefix}*): "
            + describe_validation_error(exc, "attribute")
        ) from None
    limits.check_attributes(envelope.__dict__, envelope.__pydantic_extra__)
    return envelope


def _attributes(headers: Mapping[str, str]) -> tuple[dict[str, Any], str]:
    """The CloudEvents attributes in ``headers`` (their names, decoded values) and the
    one prefix they use; EnvelopeError for a message that mixes prefixes, puts ``data``
    in a header or has a value that does not decode."""
    attributes: dict[str, Any] = {}
    used: str | None = None
    shown = ""  # the prefix as the sender wrote it, for reasons
    for name, value in headers.items():
        low = name.lower()
        for prefix, insensitive in _READ_PREFIXES:
            if not low.startswith(prefix):
                continue
            if used is None:
                used, shown = prefix, name[: len(prefix)]
            elif used != prefix:
                raise EnvelopeError(
                    f"invalid CloudEvent in binary mode: attributes under two prefixes"
                    f" ({used}* and {prefix}*); a message uses one binding's prefix"
                )
            attribute = low[len(prefix) :] if insensitive else name[len(prefix) :]
            if attribute in _NOT_ATTRIBUTES:
                raise EnvelopeError(
                    f"invalid CloudEvent in binary mode: header {name!r}: data travels"
                    " as the message body, not in a header"
                )
            attributes[attribute] = _percent_decode(value, name) if insensitive else value
            break
    return attributes, shown


def read_data(body: bytes, content_type: str | None) -> Any:
    """``data`` of a binary-mode (or plain) message from its body: JSON for a JSON media
    type or none, text for ``text/*``, None for an empty body. DecodeError otherwise."""
    if not body:
        return None
    media = (content_type or "application/json").split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json") or media == "text/json":
        return decode_json(body, f"data ({media})")
    if media.startswith("text/"):
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"data ({media}) is not UTF-8 text: {exc}") from None
    raise DecodeError(
        f"data of media type {media!r} cannot be read: sagawire reads JSON data"
        " (application/json, */*+json) or text/*"
    )


def _percent_decode(value: str, name: str) -> str:
    """A ``ce-`` header value as the HTTP and NATS bindings write it: double-quotes
    unescaped (older senders), then one round of percent-decoding, which must give
    UTF-8."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        inner = value[1:-1]
        out = []
        escaped = False
        for ch in inner:
            if escaped or ch != "\\":
                out.append(ch)
                escaped = False
            else:
                escaped = True
        value = "".join(out)
    if "%" not in value:
        return value
    try:
        return unquote_to_bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise EnvelopeError(
            f"invalid CloudEvent in binary mode: header {name!r}: its percent-encoded"
            " bytes are not UTF-8"
        ) from None


# -- writing -----------------------------------------------------------------------


def to_binary(envelope: Envelope) -> tuple[bytes, dict[str, str]]:
    """``envelope`` in binary mode, neutral form: ``(body, headers)``."""
    return encode_binary(envelope.attributes())


def encode_binary(attributes: Mapping[str, Any]) -> tuple[bytes, dict[str, str]]:
    """Binary mode of an event given by its attributes (``data`` included), as
    :meth:`Envelope.attributes` gives them: the body (``data`` as JSON for a JSON media
    type, as UTF-8 for text) and the neutral headers (``ce-<name>``, percent-encoded,
    and ``content-type``). Attributes that are None are left out."""
    content_type = attributes.get("datacontenttype") or "application/json"
    headers: dict[str, str] = {CONTENT_TYPE_HEADER: content_type}
    for name, value in attributes.items():
        if value is None or name == "data" or name == "datacontenttype":
            continue
        headers["ce-" + name] = _percent_encode(_canonical(value))
    return _data_bytes(attributes.get("data"), content_type), headers


def _canonical(value: Any) -> str:
    """The CloudEvents canonical string of an attribute value."""
    if type(value) is str:
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value).decode()


def _percent_encode(value: str) -> str:
    if all(ch in _PERCENT_SAFE for ch in value):
        return value
    out = []
    for ch in value:
        if ch in _PERCENT_SAFE:
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
    return "".join(out)


def _data_bytes(data: Any, content_type: str) -> bytes:
    if data is None:
        return b""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str) and content_type.lower().startswith("text/"):
        return data.encode("utf-8")
    try:
        return orjson.dumps(data)
    except TypeError:  # an integer beyond 64 bits: pydantic's serializer writes it
        return to_json(data)


# -- adapters ----------------------------------------------------------------------


def to_binding(headers: Mapping[str, str], binding: Binding) -> dict[str, str]:
    """Neutral binary-mode ``headers`` (:func:`encode_binary`) renamed to ``binding``'s
    prefix and value encoding; other headers as they are."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        if name.startswith("ce-"):
            attribute = name[3:]
            if not binding.percent:
                with contextlib.suppress(EnvelopeError):  # not ours to judge: sent as is
                    value = _percent_decode(value, name)
            out[binding.prefix + attribute] = value
        else:
            out[name] = value
    if not binding.content_type:
        content_type = headers.get(CONTENT_TYPE_HEADER)
        if content_type is not None:
            out[binding.prefix + "datacontenttype"] = _percent_encode(content_type)
    return out
