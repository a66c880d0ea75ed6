"""The events a service sends: ids, attributes, bytes, trace context, content modes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from pydantic import BaseModel

from adapters.base import HEADER_CONTENT_TYPE, HEADER_MESSAGE_ID
from orchestrator.client import Emit, new_event, reply_event, reply_id, to_message
from orchestrator.client.events import reply_message
from schemas.binary import NEUTRAL_SPECVERSION, decode_binary
from schemas.codec import decode, encode
from schemas.envelope import CONTENT_TYPE, Envelope
from schemas.errors import ConfigError, EnvelopeError

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class Charged(BaseModel):
    order_id: str
    payment_id: str


def command(**extra: str) -> Envelope:
    return Envelope.model_validate(
        {
            "specversion": "1.0",
            "id": "cmd-1",
            "source": "sagawire/order",
            "type": "payment.charge",
            "correlationid": "o-1",
            "attempt": 2,
            "data": {"order_id": "o-1"},
            **extra,
        }
    )


@pytest.fixture(scope="module")
def tracer() -> Iterator[trace.Tracer]:
    provider = TracerProvider()
    yield provider.get_tracer("tests.client")
    provider.shutdown()


def test_reply_ids_are_uuid5_of_the_sender_and_the_cause() -> None:
    """Derived, so a service that handles a copy again after forgetting it sends the same
    id; computable elsewhere (uuid5); different per sender, per cause and per index."""
    expected = uuid.uuid5(
        uuid.UUID("3a0e2b7c-51d4-4c29-8f6e-7265706c7921"),
        f"{len('svc')}:svc{len('src')}:src{len('id-1')}:id-1{0}",
    )
    assert reply_id("svc", "src", "id-1") == str(expected)
    ids = {
        reply_id("svc", "src", "id-1"),
        reply_id("other", "src", "id-1"),  # two services answering one event
        reply_id("svc", "src2", "id-1"),  # ids are unique per source only
        reply_id("svc", "src", "id-2"),
        reply_id("svc", "src", "id-1", 1),
        reply_id("svc", "sr", "cid-1"),  # lengths keep the parts apart
    }
    assert len(ids) == 6


def test_a_reply_copies_correlation_and_names_its_cause() -> None:
    env = reply_event(
        command(), Emit("payment.charged", Charged(order_id="o-1", payment_id="p-1")), source="pay"
    )
    assert (env.correlationid, env.causationid, env.source) == ("o-1", "cmd-1", "pay")
    assert env.id == reply_id("pay", "sagawire/order", "cmd-1")
    assert env.data == {"order_id": "o-1", "payment_id": "p-1"}
    assert env.attempt is None and env.time is not None


def test_the_fast_reply_bytes_are_what_encode_writes() -> None:
    """The service writes replies from a dict; the bytes must be the envelope's."""
    cause = command()
    emit = Emit(
        "payment.charged", {"order_id": "o-1", "n": 2**70}, subject="s", extensions={"x1": "y"}
    )
    m = reply_message(cause, emit, source="pay", index=3, now=NOW, key="o-1")
    env = decode(m.body)
    assert m.body == encode(env)
    assert env.id == m.message_id == reply_id("pay", cause.source, cause.id, 3)
    assert env.model_extra == {"x1": "y"} and env.data["n"] == 2**70
    assert m.headers == {HEADER_CONTENT_TYPE: CONTENT_TYPE, HEADER_MESSAGE_ID: env.id}
    assert (m.destination, m.key) == ("payment.charged", "o-1")


def test_bad_events_are_refused_when_built_naming_the_attribute() -> None:
    with pytest.raises(EnvelopeError, match="'type'"):
        new_event("", {}, source="shop")
    with pytest.raises(EnvelopeError, match="Bad_Name"):
        new_event("order.placed", {}, source="shop", extensions={"Bad_Name": "x"})
    with pytest.raises(EnvelopeError, match="Bad_Name"):
        reply_message(
            command(),
            Emit("a", extensions={"Bad_Name": "x"}),
            source="s",
            index=0,
            now=NOW,
            key=None,
        )
    with pytest.raises(EnvelopeError, match="empty type"):
        reply_message(command(), Emit(""), source="s", index=0, now=NOW, key=None)


def test_new_events_get_fresh_ids_unless_named() -> None:
    a = new_event("order.placed", {"order_id": "o"}, source="shop", correlationid="o")
    b = new_event("order.placed", {"order_id": "o"}, source="shop")
    assert a.id != b.id and uuid.UUID(a.id).version == 4
    assert new_event("order.placed", None, source="shop", id="o/placed").id == "o/placed"
    m = to_message(a)
    assert (m.message_id, m.key, m.destination) == (a.id, "o", "order.placed")
    assert decode(m.body) == a


def test_an_active_span_becomes_traceparent(tracer: trace.Tracer) -> None:
    assert "traceparent" not in (new_event("a", None, source="s").model_extra or {})
    with tracer.start_as_current_span("checkout") as span:
        env = new_event("order.placed", {}, source="shop")
        ctx = span.get_span_context()
        tp = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"
        assert (env.model_extra or {})["traceparent"] == tp
        reply = reply_message(command(), Emit("x"), source="s", index=0, now=NOW, key=None)
        assert decode(reply.body).model_extra == {"traceparent": tp}
        assert reply.headers["traceparent"] == tp  # for tracing that reads headers
    assert to_message(env).headers["traceparent"] == tp


def test_without_a_span_a_reply_carries_its_causes_trace() -> None:
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    cause = command(traceparent=tp, tracestate="k=v")
    env = reply_event(cause, Emit("payment.charged"), source="pay")
    assert env.model_extra == {"traceparent": tp, "tracestate": "k=v"}
    m = reply_message(cause, Emit("payment.charged"), source="pay", index=0, now=NOW, key=None)
    assert decode(m.body).model_extra == {"traceparent": tp, "tracestate": "k=v"}


def test_binary_mode_puts_the_attributes_in_headers() -> None:
    env = new_event("order.placed", {"order_id": "o-1"}, source="shop", correlationid="o-1")
    m = to_message(env, mode="binary")
    assert NEUTRAL_SPECVERSION in m.headers and m.headers["ce-id"] == env.id
    assert m.body == b'{"order_id":"o-1"}' and m.headers[HEADER_MESSAGE_ID] == env.id
    assert decode_binary(m.headers, m.body) == env
    with pytest.raises(ConfigError, match="'xml'"):
        to_message(env, mode="xml")  # type: ignore[arg-type]
