"""Trace context through the sidecar: passed on always, a span per message with OpenTelemetry.

The end-to-end test runs a producer (the client's Publisher, in a span), the engine's
own loop and a participant (the client's Service) in one process, on the in-memory
broker and on NATS JetStream, with the OpenTelemetry SDK's in-memory exporter, and
checks the trace: producer -> sidecar -> participant, and the participant's reply back
into the sidecar.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.js.errors
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Tracer
from pydantic import BaseModel

from adapters import open_transport
from adapters.memory import MemoryBroker
from orchestrator import Event, Send, Step, StepSaga
from orchestrator.client import Emit, Publisher, Service
from orchestrator.engine import Engine, EngineConfig, tracing
from orchestrator.language.definition import SagaDefinition
from orchestrator.store.memory import MemoryStore
from orchestrator.testing import SagaHarness
from schemas.envelope import Envelope
from schemas.errors import ConfigError
from tests.client.contract import Watcher
from tests.client.contract import running as serving
from tests.support.services import require, unique

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
NATS = "127.0.0.1", 4222


class Job(BaseModel):
    job_id: str


def job_saga(prefix: str = "job") -> SagaDefinition:
    """Start, one step (a command to a worker, its reply, a 1 s deadline), done."""
    return StepSaga(
        f"{prefix}-saga",
        state=Job,
        start=Event(f"{prefix}.started", Job),
        correlate="job_id",
        steps=[
            Step(
                "work",
                send=Send(f"{prefix}.work", Job),
                success=Event(f"{prefix}.worked", Job),
                timeout=1.0,
            )
        ],
        on_completed=Send(f"{prefix}.done", Job),
        on_compensated=Send(f"{prefix}.abandoned", Job),
    )


@dataclass
class Spans:
    """What was traced: the engine's spans and the test's own (a producer's, a worker's)."""

    exporter: InMemorySpanExporter
    tracer: Tracer

    def all(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()

    def named(self, name: str) -> ReadableSpan:
        (span,) = [s for s in self.all() if s.name == name]
        return span


@pytest.fixture
def spans() -> Iterator[Spans]:
    """Tracing on, into an in-memory exporter (and off again after the test)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    try:
        yield Spans(exporter, provider.get_tracer("test"))
    finally:
        tracing.disable()
        provider.shutdown()


def extensions(env: Envelope) -> dict[str, object]:
    return dict(env.model_extra or {})


def span_id(traceparent: object) -> int:
    assert isinstance(traceparent, str)
    return int(traceparent.split("-")[2], 16)


# -- without OpenTelemetry enabled: passed on as it came ------------------------------


@pytest.mark.parametrize("mode", ["structured", "binary"])
async def test_commands_carry_the_trace_of_their_cause(mode: str) -> None:
    assert not tracing.enabled()
    async with SagaHarness(job_saga(), config=EngineConfig(content_mode=mode)) as h:
        started = h.event("job.started", {"job_id": "j-1"}, traceparent=TP, tracestate="v=1")
        await h.deliver(started)
        (work,) = h.commands("job.work")
        assert extensions(work) == {"traceparent": TP, "tracestate": "v=1"}
        await h.deliver(h.event("job.worked", {"job_id": "j-1"}, traceparent=TP[:-1] + "0"))
        (done,) = h.commands("job.done")
        assert extensions(done) == {"traceparent": TP[:-1] + "0"}  # no tracestate: none came


async def test_no_trace_in_none_out_and_a_malformed_one_is_dropped() -> None:
    async with SagaHarness(job_saga()) as h:
        await h.send("job.started", {"job_id": "j-1"})
        assert extensions(h.commands("job.work")[0]) == {}
        bad = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra"
        await h.deliver(h.event("job.started", {"job_id": "j-2"}, traceparent=bad, tracestate="a"))
        assert extensions(h.commands("job.work", "j-2")[0]) == {}


@pytest.mark.parametrize(
    ("value", "passed_on"),
    [
        (TP, True),
        ("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-later", True),
        (TP + "-more", False),  # version 00 has exactly four fields
        ("ff" + TP[2:], False),
        ("00-" + "0" * 32 + "-b7ad6b7169203331-01", False),
        ("00-0af7651916cd43dd8448eb211c80319c-" + "0" * 16 + "-01", False),
        (TP.upper(), False),
        (42, False),
    ],
)
def test_which_traceparents_are_passed_on(value: object, passed_on: bool) -> None:
    found = tracing.carried({"traceparent": value, "tracestate": 7})
    assert found == ({"traceparent": value} if passed_on else None)


# -- with OpenTelemetry: a span per handled message -----------------------------------


async def test_a_span_per_message_and_commands_carry_it(spans: Spans) -> None:
    async with SagaHarness(job_saga()) as h:
        started = h.event("job.started", {"job_id": "j-1"}, traceparent=TP, tracestate="v=1")
        await h.deliver(started)
        (work,) = h.commands("job.work")
    span = spans.named("sagawire handle job.started")
    assert span.kind == SpanKind.CONSUMER
    assert span.parent is not None and span.parent.is_remote
    assert (span.context.trace_id, span.parent.span_id) == (
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
    )
    assert dict(span.attributes or {}) == {
        "sagawire.saga": "job-saga",
        "sagawire.state": "work",
        "sagawire.correlation_id": "j-1",
        "messaging.message.id": started.id,
        "messaging.destination.name": "job.started",
        "messaging.operation.type": "process",
    }
    trace = extensions(work)
    assert span_id(trace["traceparent"]) == span.context.span_id
    assert trace["tracestate"] == "v=1"  # the producer's vendors' state goes on


async def test_a_message_without_a_trace_and_a_timer_start_their_own(
    spans: Spans,
) -> None:
    async with SagaHarness(job_saga()) as h:
        await h.send("job.started", {"job_id": "j-1"})
        await h.advance(2)  # the step's deadline: compensated, abandoned
        (abandoned,) = h.commands("job.abandoned")
    started = spans.named("sagawire handle job.started")
    (timer,) = [s for s in spans.all() if s.kind == SpanKind.INTERNAL]
    assert started.parent is None and timer.parent is None
    assert "messaging.destination.name" not in (timer.attributes or {})
    assert dict(timer.attributes or {})["sagawire.correlation_id"] == "j-1"
    assert span_id(extensions(abandoned)["traceparent"]) == timer.context.span_id


def test_tracing_asked_for_without_opentelemetry_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tracing, "_otel_trace", None)
    with pytest.raises(ConfigError, match=r"pip install 'sagawire\[otel\]'"):
        tracing.enable()
    assert not tracing.enabled()


# -- end to end: producer -> sidecar -> participant -----------------------------------


@pytest.fixture(params=["memory", pytest.param("nats", marks=pytest.mark.broker("nats"))])
async def broker_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    if request.param == "memory":
        name = unique("trace")
        yield f"memory://{name}"
        MemoryBroker.forget(name)
        return
    require("nats", *NATS)
    stream = unique("SWT_")
    server = f"nats://{NATS[0]}:{NATS[1]}"
    yield f"{server}?stream={stream}&deadletter=sagawire.deadletter.{stream}&fetch_timeout=1"
    nc = await nats.connect(server)
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await nc.jetstream().delete_stream(stream)
    await nc.close()


@contextlib.asynccontextmanager
async def sidecar(saga: SagaDefinition, url: str, group: str) -> AsyncIterator[Engine]:
    """The engine's own loop on ``url`` (what ``sagawire run`` runs), a store in memory."""
    store, transport = MemoryStore(), open_transport(url)
    await store.open()
    await transport.start()
    engine = Engine([saga], store, transport, config=EngineConfig(group=group))
    await engine.prepare()
    stopping = asyncio.Event()
    task = asyncio.ensure_future(engine.run(stopping))
    try:
        yield engine
    finally:
        stopping.set()
        await asyncio.wait_for(task, 10)
        await transport.close()
        await store.close()


async def test_one_trace_from_producer_through_sidecar_to_participant(
    broker_url: str, spans: Spans
) -> None:
    p = unique("tr")
    tracer = spans.tracer

    worker = Service("worker", broker_url, group=f"{p}-worker")

    @worker.on(f"{p}.work", Job, emits=[f"{p}.worked"])
    def work(job: Job, env: Envelope) -> Emit:
        with tracer.start_as_current_span("worker work", kind=SpanKind.CONSUMER):
            pass  # the participant's own work, in the trace of the command
        return Emit(f"{p}.worked", job)

    watcher = Watcher(open_transport(broker_url), (f"{p}.done",), f"{p}-watch")
    async with sidecar(job_saga(p), broker_url, f"{p}-sidecar"), serving(worker):
        await watcher.start()
        try:
            async with Publisher(broker_url, source="shop") as shop:
                with tracer.start_as_current_span("shop place", kind=SpanKind.PRODUCER):
                    placed = await shop.publish(f"{p}.started", Job(job_id="j-1"))
            (done,) = await watcher.wait_for(1)
        finally:
            await watcher.close()

    producer = spans.named("shop place")
    handled = spans.named(f"sagawire handle {p}.started")
    participant = spans.named("worker work")
    replied = spans.named(f"sagawire handle {p}.worked")
    trace_ids = {s.context.trace_id for s in (producer, handled, participant, replied)}
    assert trace_ids == {producer.context.trace_id}
    assert producer.parent is None
    assert handled.parent is not None and handled.parent.span_id == producer.context.span_id
    assert participant.parent is not None
    assert participant.parent.span_id == handled.context.span_id
    # the reply carried its cause's trace (the worker's span had ended): a sibling
    assert replied.parent is not None and replied.parent.span_id == handled.context.span_id
    assert dict(handled.attributes or {})["messaging.message.id"] == placed.id
    assert dict(replied.attributes or {})["sagawire.state"] == "completed"
    assert span_id(extensions(done)["traceparent"]) == replied.context.span_id


ORDER = str(Path(__file__).resolve().parents[1] / "sagas" / "order.py")


async def test_the_sidecars_otel_setting_turns_spans_on() -> None:
    """``--otel`` / ``SAGAWIRE_OTEL`` reach the engine: spans on at open, off by default."""
    from orchestrator.sidecar.service import Sidecar
    from orchestrator.sidecar.settings import Settings

    tracing.disable()
    try:
        off = Sidecar(Settings(sagas=ORDER, broker="memory://", store="memory://"))
        await off.open()
        assert not tracing.enabled()
        await off.close()
        on = Sidecar(Settings(sagas=ORDER, broker="memory://", store="memory://", otel=True))
        await on.open()
        assert tracing.enabled()
        await on.close()
    finally:
        tracing.disable()
