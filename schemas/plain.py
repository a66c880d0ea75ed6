"""Plain JSON events: messages that are not CloudEvents at all, read as if they were.

Most services publish a bare JSON body (``{"order_id": "o-1", ...}``) to a topic, a
subject or a routing key, with maybe a request id in a header. A saga declares such an
event ``plain`` (``Event("order.placed", OrderPlaced, plain=Plain(id_header=
"x-request-id"))``), and a delivery on that destination that is neither a structured
nor a binary-mode CloudEvent becomes the envelope below, which the engine then routes,
validates and de-duplicates like any other:

* ``type``: the destination it arrived on (a topic, a subject, a routing key; sagawire
  consumes each event type from the destination of that name);
* ``id``: the value of :attr:`Plain.id_header` when the message has it, else a hash of
  the destination and the body: stable across redeliveries, so a redelivered message is
  a duplicate. (Two messages with the same body on the same destination are then one
  event: give them an id header if your service can send the same body twice.)
* ``correlationid``: the value of :attr:`Plain.correlation_header` when declared and
  present; else the saga's ``correlate=`` (a field of the data) finds it, as for a
  CloudEvent without that attribute;
* ``source``: ``plain/<destination>``; ``data``: the body, JSON (or text for a
  ``content-type`` of ``text/*``), as in binary mode;
* ``datacontenttype``: the ``content-type`` header, if any.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from schemas.binary import CONTENT_TYPE_HEADER, header, read_data
from schemas.codec import describe_validation_error
from schemas.envelope import Envelope
from schemas.errors import EnvelopeError, MessageError
from schemas.limits import DEFAULT_LIMITS, Limits

__all__ = ["PLAIN_SOURCE", "Plain", "plain_id"]

PLAIN_SOURCE = "plain/"
"""The ``source`` of a plain event is this followed by its destination."""


@dataclass(frozen=True, slots=True)
class Plain:
    """Where a plain JSON event's attributes come from (the module docstring says how
    each is found). Header names are matched ignoring case."""

    id_header: str | None = None
    """A header carrying a unique id per message (``x-request-id``); when absent, the id
    is a hash of the destination and the body."""
    correlation_header: str | None = None
    """A header carrying the correlation id; without one, the saga's ``correlate=``
    (a data field) must find it."""

    def envelope(
        self,
        destination: str,
        headers: Mapping[str, str],
        body: bytes,
        limits: Limits = DEFAULT_LIMITS,
    ) -> Envelope:
        """The envelope of a plain message. Raises the :class:`MessageError` a
        structured message with the same fault would (LimitError first, DecodeError for
        a body that is not JSON, EnvelopeError for an unusable header), its reason
        naming the destination."""
        try:
            return self._envelope(destination, headers, body, limits)
        except MessageError as exc:
            raise type(exc)(f"plain event on {destination!r}: {exc.reason}") from None

    def _envelope(
        self, destination: str, headers: Mapping[str, str], body: bytes, limits: Limits
    ) -> Envelope:
        limits.check_wire_size(len(body) + sum(len(k) + len(v) for k, v in headers.items()))
        content_type = header(headers, CONTENT_TYPE_HEADER)
        attributes: dict[str, Any] = {
            "specversion": "1.0",
            "id": self._id(destination, headers, body),
            "source": PLAIN_SOURCE + destination,
            "type": destination,
            "data": read_data(body, content_type),
        }
        if content_type:
            attributes["datacontenttype"] = content_type
        if self.correlation_header is not None:
            cid = header(headers, self.correlation_header)
            if cid:
                attributes["correlationid"] = cid
        try:
            envelope = Envelope.model_validate(attributes)
        except ValidationError as exc:
            raise EnvelopeError(describe_validation_error(exc, "attribute")) from None
        limits.check_attributes(envelope.__dict__, None)
        return envelope

    def _id(self, destination: str, headers: Mapping[str, str], body: bytes) -> str:
        if self.id_header is not None:
            given = header(headers, self.id_header)
            if given:
                return given
        return plain_id(destination, body)


def plain_id(destination: str, body: bytes) -> str:
    """The id of a plain message with no id header: ``sha256:`` and the hex digest of
    its destination and body, the same for every redelivery of the message."""
    digest = hashlib.sha256(destination.encode("utf-8", "surrogatepass") + b"\n" + body)
    return "sha256:" + digest.hexdigest()
