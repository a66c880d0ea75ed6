"""The CloudEvents envelope: strict validation, errors naming the attribute, round trips."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import (
    DecodeError,
    Envelope,
    EnvelopeError,
    LimitError,
    Limits,
    decode,
    encode,
    envelope_json_schema,
)

GOOD = {
    "specversion": "1.0",
    "id": "m-1",
    "source": "svc/payments",
    "type": "payment.charged",
    "time": "2026-11-22T10:00:00Z",
    "datacontenttype": "application/json",
    "correlationid": "o-1",
    "causationid": "m-0",
    "data": {"order_id": "o-1", "payment_id": "p-1"},
}


def test_decodes_a_structured_cloudevent() -> None:
    env = decode(orjson.dumps(GOOD))
    assert env.type == "payment.charged" and env.correlationid == "o-1"
    assert env.time == datetime(2026, 11, 22, 10, tzinfo=UTC)


def test_round_trip_keeps_every_attribute() -> None:
    env = decode(orjson.dumps({**GOOD, "traceparent": "00-abc-def-01"}))
    again = decode(encode(env))
    assert again == env
    assert again.model_extra == {"traceparent": "00-abc-def-01"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"specversion": "0.3"}, "attribute 'specversion'"),
        ({"id": ""}, "attribute 'id'"),
        ({"id": 5}, "attribute 'id'"),
        ({"type": None}, "attribute 'type'"),
        ({"time": "yesterday"}, "attribute 'time'"),
        ({"time": "2026-11-22T10:00:00"}, "UTC offset"),
        ({"attempt": 0}, "attribute 'attempt'"),
        ({"Bad-Name": 1}, "extension attribute 'Bad-Name'"),
    ],
)
def test_invalid_attributes_are_named(change: dict[str, object], message: str) -> None:
    with pytest.raises(EnvelopeError, match=message):
        decode(orjson.dumps({**GOOD, **change}))


def test_missing_attributes_are_each_named() -> None:
    with pytest.raises(EnvelopeError) as info:
        decode(b'{"specversion": "1.0"}')
    for name in ("id", "source", "type"):
        assert f"attribute '{name}'" in str(info.value)


def test_not_json_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="not JSON"):
        decode(b"\xff\xfe")


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_escape_as_other_errors(body: bytes) -> None:
    with contextlib.suppress(DecodeError, EnvelopeError):
        decode(body)


def test_exported_json_schema_is_current() -> None:
    path = Path(__file__).resolve().parent.parent / "schemas" / "cloudevent.schema.json"
    assert orjson.loads(path.read_bytes()) == orjson.loads(orjson.dumps(envelope_json_schema()))


def test_new_sets_time_and_encodes_compactly() -> None:
    env = Envelope.new("a.b", {"x": 1}, id="i", source="s")
    body = orjson.loads(encode(env))
    assert body["specversion"] == "1.0" and "time" in body and "correlationid" not in body


# -- limits: refused at the door, before they reach a header, a key or a command --------


@pytest.mark.parametrize("name", ["id", "source", "type", "correlationid", "causationid"])
def test_an_attribute_over_the_limit_is_a_limit_error_naming_it(name: str) -> None:
    body = orjson.dumps({**GOOD, name: "x" * 1025})
    with pytest.raises(LimitError, match=f"attribute '{name}' is 1025 bytes") as err:
        decode(body)
    assert err.value.kind == "limit"
    decode(orjson.dumps({**GOOD, name: "x" * 1024}))  # at the limit: fine


def test_extension_attributes_and_multibyte_text_are_measured_in_bytes() -> None:
    with pytest.raises(LimitError, match="'tenant'"):
        decode(orjson.dumps({**GOOD, "tenant": "t" * 2000}))
    with pytest.raises(LimitError, match="1026 bytes"):  # 342 characters, 3 bytes each
        decode(orjson.dumps({**GOOD, "correlationid": "€" * 342}))


def test_the_message_size_and_custom_limits() -> None:
    big = orjson.dumps({**GOOD, "data": {"blob": "x" * (300 * 1024)}})
    with pytest.raises(LimitError, match="max_message_bytes"):
        decode(big)
    assert decode(big, Limits(max_message_bytes=1 << 20)).data["blob"]
    with pytest.raises(LimitError):
        decode(orjson.dumps({**GOOD, "id": "x" * 100}), Limits(max_attribute_bytes=64))
    with pytest.raises(ValueError, match="too small"):
        Limits(max_message_bytes=10)
