"""The pure mappings of foreign input: CloudEvents binary content mode (``schemas.binary``)
and plain JSON events (``schemas.plain``), and how a saga declares a plain event.

No engine, no broker: headers and bytes in, an envelope or a clear error out. The
engine and the brokers are exercised in ``tests/test_foreign_input.py`` and
``tests/transport/test_binary_brokers.py``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel

from orchestrator.engine.intake import plain_destinations
from orchestrator.language.machine import StateMachine
from orchestrator.language.parts import Event, Plain, When
from schemas.binary import (
    AMQP,
    HTTP,
    KAFKA,
    NATS,
    binary_prefix,
    decode_binary,
    encode_binary,
    read_data,
    to_binary,
    to_binding,
)
from schemas.codec import decode, encode
from schemas.envelope import Envelope
from schemas.errors import DecodeError, DefinitionError, EnvelopeError, LimitError
from schemas.limits import Limits
from schemas.plain import plain_id

EVENT = Envelope.model_validate(
    {
        "specversion": "1.0",
        "id": "e 1%/€",  # a space, a percent and a non-ASCII character to encode
        "source": "/shop/checkout",
        "type": "order.placed",
        "time": "2026-01-02T03:04:05.123456+00:00",
        "subject": "orders",
        "correlationid": "o-1",
        "causationid": "c-0",
        "attempt": 2,
        "tenant": "acme",
        "data": {"order_id": "o-1", "big": 123456789012345678901234567890, "n": 1.5},
    }
)


def kafka_headers(**extra: str) -> dict[str, str]:
    """A binary-mode event as a Kafka producer of another team writes it."""
    return {
        "ce_specversion": "1.0",
        "ce_id": "k-1",
        "ce_source": "/inventory",
        "ce_type": "inventory.reserved",
        "ce_time": "2026-01-02T03:04:05Z",
        "content-type": "application/json",
        **extra,
    }


# -- binary mode: writing and reading back -------------------------------------------


def test_binary_round_trip_gives_the_same_envelope_on_every_binding() -> None:
    body, headers = to_binary(EVENT)
    assert body == b'{"order_id":"o-1","big":123456789012345678901234567890,"n":1.5}'
    assert headers["content-type"] == "application/json"
    assert headers["ce-id"] == "e%201%25/%E2%82%AC"  # the neutral form is percent-encoded
    assert headers["ce-attempt"] == "2" and headers["ce-tenant"] == "acme"
    assert "ce-data" not in headers and "ce-datacontenttype" not in headers
    assert decode_binary(headers, body) == EVENT
    for binding in (HTTP, KAFKA, NATS, AMQP):
        assert decode_binary(to_binding(headers, binding), body) == EVENT, binding.name
    # and a structured message of the same event is the same envelope
    assert decode(encode(EVENT)) == EVENT


def test_each_binding_writes_its_own_prefix_and_values() -> None:
    _, headers = to_binary(EVENT)
    kafka = to_binding(headers, KAFKA)
    assert kafka["ce_id"] == "e 1%/€" and kafka["content-type"] == "application/json"
    assert not any(k.startswith("ce-") for k in kafka)
    amqp = to_binding(headers, AMQP)
    assert amqp["cloudEvents_id"] == "e 1%/€" and amqp["cloudEvents_attempt"] == "2"
    nats = to_binding(headers, NATS)  # the NATS binding: datacontenttype under ce-
    assert nats["ce-id"] == "e%201%25/%E2%82%AC"
    assert nats["ce-datacontenttype"] == "application/json"
    assert to_binding({"x-other": "1"}, KAFKA) == {"x-other": "1"}


@pytest.mark.parametrize(
    ("prefix", "percent"),
    [
        ("ce_", False),
        ("ce-", True),
        ("CE-", True),
        ("cloudEvents_", False),
        ("cloudEvents:", False),
    ],
)
def test_any_prefix_is_read_on_any_broker(prefix: str, percent: bool) -> None:
    source = "/a%20b" if percent else "/a b"
    headers = {
        f"{prefix}specversion": "1.0",
        f"{prefix}id": "x-1",
        f"{prefix}source": source,
        f"{prefix}type": "inventory.reserved",
        f"{prefix}correlationid": "o-1",
        "Content-Type": "application/json; charset=utf-8",
    }
    assert binary_prefix(headers) == prefix.lower()
    env = decode_binary(headers, b'{"order_id": "o-1"}')
    assert (env.id, env.source, env.type, env.correlationid) == (
        "x-1",
        "/a b",
        "inventory.reserved",
        "o-1",
    )
    assert env.datacontenttype == "application/json; charset=utf-8"
    assert env.data == {"order_id": "o-1"}


def test_ce_dash_names_are_case_insensitive_and_quoted_values_unescaped() -> None:
    headers = {
        "Ce-SpecVersion": "1.0",
        "CE-ID": '"quoted \\"id\\""',
        "ce-Source": "/s",
        "ce-type": "t",
        "ce-datacontenttype": "text/plain",  # the attribute header wins over content-type
        "content-type": "application/json",
    }
    env = decode_binary(headers, "héllo".encode())
    assert env.id == 'quoted "id"'
    assert env.data == "héllo" and env.datacontenttype == "text/plain"


def test_not_binary_without_a_specversion_header() -> None:
    assert binary_prefix({"content-type": "application/json", "ce_id": "1"}) is None
    assert binary_prefix({}) is None


def test_empty_body_is_no_data_and_no_content_type_means_json() -> None:
    env = decode_binary({k: v for k, v in kafka_headers().items() if k != "content-type"}, b"")
    assert env.data is None and env.datacontenttype == "application/json"
    assert read_data(b"[1, 2]", None) == [1, 2]
    assert read_data(b'{"a": 1}', "application/vnd.acme+json") == {"a": 1}


def test_encode_binary_takes_the_engines_attribute_dicts() -> None:
    when = datetime(2026, 1, 2, tzinfo=UTC)
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "id": "cmd-1",
        "source": "sagawire/shop",
        "type": "payment.charge",
        "time": when,
        "datacontenttype": "application/json",
        "correlationid": "o-1",
        "causationid": "e-1",
        "attempt": None,  # left out
        "data": {"amount": 5},
    }
    body, headers = encode_binary(attributes)
    assert body == b'{"amount":5}'
    assert headers == {
        "content-type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": "cmd-1",
        "ce-source": "sagawire/shop",
        "ce-type": "payment.charge",
        "ce-time": "2026-01-02T00:00:00+00:00",
        "ce-correlationid": "o-1",
        "ce-causationid": "e-1",
    }
    assert encode_binary({**attributes, "data": None})[0] == b""


# -- binary mode: what is refused, and why ---------------------------------------------


@pytest.mark.parametrize(
    ("headers", "body", "error", "reason"),
    [
        ({"ce_id": ""}, b"{}", EnvelopeError, "attribute 'id'"),
        ({"ce_source": None}, b"{}", EnvelopeError, "attribute 'source': Field required"),
        ({"ce_specversion": "0.3"}, b"{}", EnvelopeError, "attribute 'specversion'"),
        ({"ce_time": "yesterday"}, b"{}", EnvelopeError, "attribute 'time'"),
        ({"ce_attempt": "two"}, b"{}", EnvelopeError, "header ce_attempt"),
        ({"ce_Tenant": "x"}, b"{}", EnvelopeError, "lowercase"),
        ({"ce_data": "{}"}, b"{}", EnvelopeError, "data travels as the message body"),
        ({"ce-id": "k-1"}, b"{}", EnvelopeError, "two prefixes"),
        ({}, b"{not json", DecodeError, "data (application/json) is not JSON"),
        ({}, b'{"n": 1e999}', DecodeError, "NaN, Infinity or out of range"),
        ({"content-type": "application/avro"}, b"\x00\x01", DecodeError, "application/avro"),
        ({"content-type": "text/plain"}, b"\xff", DecodeError, "not UTF-8"),
    ],
)
def test_invalid_binary_events_say_what_is_wrong(
    headers: dict[str, str | None], body: bytes, error: type[Exception], reason: str
) -> None:
    merged = {**kafka_headers(), **headers}
    given = {k: v for k, v in merged.items() if v is not None}
    with pytest.raises(error, match=re.escape(reason)):
        decode_binary(given, body)


def test_percent_encoded_bytes_must_be_utf8() -> None:
    headers = {"ce-specversion": "1.0", "ce-id": "%C0%A0", "ce-source": "/s", "ce-type": "t"}
    with pytest.raises(EnvelopeError, match="not UTF-8"):
        decode_binary(headers, b"{}")


def test_binary_events_are_held_to_the_limits() -> None:
    limits = Limits(max_message_bytes=1024, max_attribute_bytes=64)
    with pytest.raises(LimitError, match="body and headers"):
        decode_binary(kafka_headers(), b'"' + b"x" * 1000 + b'"', limits)
    with pytest.raises(LimitError, match="attribute 'correlationid'"):
        decode_binary(kafka_headers(ce_correlationid="c" * 65), b"{}", limits)


# -- plain JSON events -----------------------------------------------------------------


def test_plain_event_takes_type_from_the_destination_and_id_from_a_header() -> None:
    plain = Plain(id_header="x-request-id", correlation_header="x-correlation-id")
    headers = {"X-Request-Id": "req-7", "x-correlation-id": "o-9"}
    env = plain.envelope("order.placed", headers, b'{"order_id": "o-1"}')
    assert (env.type, env.id, env.source) == ("order.placed", "req-7", "plain/order.placed")
    assert env.correlationid == "o-9" and env.data == {"order_id": "o-1"}


def test_plain_event_without_an_id_header_gets_a_stable_hash() -> None:
    plain = Plain(id_header="x-request-id")
    body = b'{"order_id": "o-1"}'
    first = plain.envelope("order.placed", {}, body)
    again = plain.envelope("order.placed", {"other": "header"}, body)  # a redelivery
    assert first.id == again.id == plain_id("order.placed", body)
    assert first.id.startswith("sha256:") and first.correlationid is None
    assert plain.envelope("order.cancelled", {}, body).id != first.id
    assert plain.envelope("order.placed", {}, b'{"order_id": "o-2"}').id != first.id


@pytest.mark.parametrize(
    ("headers", "body", "error", "reason"),
    [
        ({}, b"{not json", DecodeError, "plain event on 'order.placed': data"),
        ({"content-type": "image/png"}, b"\x89PNG", DecodeError, "image/png"),
        ({"x-request-id": "r" * 1100}, b"{}", LimitError, "attribute 'id'"),
        ({}, b"[" * 2100 + b"]" * 2100, LimitError, "larger than the limit"),
    ],
)
def test_invalid_plain_events_say_what_is_wrong(
    headers: dict[str, str], body: bytes, error: type[Exception], reason: str
) -> None:
    limits = Limits(max_message_bytes=4096, max_attribute_bytes=1024)
    with pytest.raises(error, match=re.escape(reason)):
        Plain(id_header="x-request-id").envelope("order.placed", headers, body, limits)


# -- declaring plain events ------------------------------------------------------------


class Placed(BaseModel):
    order_id: str


class State(BaseModel):
    order_id: str


def machine(*events: Event, name: str = "shop", correlate: str | None = None) -> Any:
    return StateMachine(
        name,
        state=State,
        events=events,
        start="order.placed",
        final={"done": "completed"},
        transitions=[When("initial", "order.placed").to("done")],
        correlate=correlate,
    )


def test_a_plain_event_declares_how_it_is_read() -> None:
    saga = machine(Event("order.placed", Placed, plain=True), correlate="order_id")
    assert saga.events["order.placed"].plain == Plain()
    header = Plain(correlation_header="x-corr")
    saga = machine(Event("order.placed", Placed, plain=header))
    assert saga.events["order.placed"].plain == header
    assert "header 'x-corr'" in saga.events["order.placed"].correlate_desc
    assert machine(Event("order.placed", Placed, "order_id")).events["order.placed"].plain is None


def test_a_plain_event_with_no_way_to_correlate_fails_at_load() -> None:
    with pytest.raises(DefinitionError, match="plain JSON event carries no correlationid"):
        machine(Event("order.placed", Placed, plain=Plain(id_header="x-id")))


def test_two_sagas_must_read_one_plain_event_the_same_way() -> None:
    a = machine(Event("order.placed", Placed, "order_id", plain=True), name="a")
    b = machine(Event("order.placed", Placed, "order_id", plain=Plain("x-id")), name="b")
    c = machine(Event("order.placed", Placed, "order_id"), name="c")  # CloudEvents only
    assert plain_destinations([a, c]) == {"order.placed": Plain()}
    with pytest.raises(DefinitionError, match="sagas 'a' and 'b' declare plain event"):
        plain_destinations([a, b])
