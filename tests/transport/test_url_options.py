"""Every broker refuses a query option it does not know, naming it and the ones it takes.

A misspelt option (``?stram=ORDERS``) used to fall back to its default without a word
on NATS, RabbitMQ and memory://: the sidecar then ran on the wrong stream or exchange.
Parsing only: no broker is needed, and none is contacted.
"""

from __future__ import annotations

import pytest

from adapters import check_transport_url
from adapters._kafka_settings import KafkaSettings
from adapters._nats_options import NatsOptions
from adapters._rabbitmq_config import RabbitConfig
from adapters.memory import MemoryBroker, parse_memory_url
from schemas.errors import ConfigError


@pytest.mark.parametrize(
    ("url", "misspelt", "meant", "another_accepted"),
    [
        ("nats://127.0.0.1:4222?stram=ORDERS", "stram", "stream", "ack_wait"),
        ("tls://broker:4443?stream=S&max_delivr=3", "max_delivr", "max_deliver", "tls_ca"),
        ("kafka://h:9092?partitons=3", "partitons", "partitions", "topic_prefix"),
        ("amqp://guest:guest@h:5672/?exchnge=x", "exchnge", "exchange", "prefetch"),
        ("amqps://h/?cafle=ca.pem", "cafle", "cafile", "queue_type"),
        ("memory://t?max_message_sise=10", "max_message_sise", "max_message_size", None),
    ],
)
def test_a_misspelt_option_is_refused_by_every_broker(
    url: str, misspelt: str, meant: str, another_accepted: str | None
) -> None:
    with pytest.raises(ConfigError) as caught:
        check_transport_url(url)
    text = str(caught.value)
    assert f"unknown option {misspelt!r} (did you mean {meant!r}?)" in text
    accepted = text.partition("accepted: ")[2]
    assert meant in accepted
    if another_accepted is not None:
        assert another_accepted in accepted


@pytest.mark.parametrize(
    "parse",
    [
        lambda: NatsOptions.from_url("nats://h?stream=S&colour=blue", {}),
        lambda: KafkaSettings.from_url("kafka://h:9092?colour=blue", env={}),
        lambda: RabbitConfig.from_url("amqp://h/?colour=blue", {}),
        lambda: parse_memory_url("memory://?colour=blue"),
    ],
    ids=["nats", "kafka", "rabbitmq", "memory"],
)
def test_each_parser_refuses_on_its_own(parse: object) -> None:
    """The transports' own parsers refuse too (a client library user never goes
    through ``sagawire run``); an option unlike any is named without a guess."""
    with pytest.raises(ConfigError, match=r"unknown option 'colour' in .*; accepted: ") as caught:
        parse()  # type: ignore[operator]
    assert "did you mean" not in str(caught.value)


def test_every_unknown_option_is_named_and_blank_ones_count() -> None:
    with pytest.raises(ConfigError) as caught:
        NatsOptions.from_url("nats://h?stram=&ack_wiat=5", {})
    assert "unknown options 'stram' (did you mean 'stream'?), 'ack_wiat'" in str(caught.value)


def test_the_error_never_shows_a_secret() -> None:
    for url in (
        "nats://alice:pw-s3cret@h?token=tok-s3cret&stram=S",
        "kafka://alice:pw-s3cret@h:9092?partitons=3",
        "amqp://alice:pw-s3cret@h/?exchnge=x",
    ):
        with pytest.raises(ConfigError) as caught:
            check_transport_url(url)
        assert "s3cret" not in str(caught.value), url


def test_known_options_pass_and_checking_creates_nothing() -> None:
    check_transport_url(
        "nats://h:4222?stream=S&deadletter=dl.S&subject_prefix=p&max_age=60&max_deliver=3"
        "&ack_wait=5&max_ack_pending=8&fetch_timeout=1&publish_timeout=2&connect_timeout=3"
        "&ping_interval=1&reconnect_wait=1&double_ack=true&start=new&token=t&creds=/c"
    )
    check_transport_url(
        "amqp://h/?exchange=x&queue_prefix=q&queue_type=quorum&prefetch=1&heartbeat=5"
        "&reconnect_max=2&mandatory=1"
    )
    check_transport_url("kafka://h:9092?partitions=3&replication=1&start=new&idempotence=true")
    name = "never-created-by-a-check"
    check_transport_url(f"memory://{name}?max_message_size=1024")
    assert name not in MemoryBroker._named
    assert parse_memory_url(f"memory://{name}?max_message_size=1024") == (name, 1024)


def test_an_unknown_scheme_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown broker URL scheme 'natz://'.*nats://"):
        check_transport_url("natz://h")
