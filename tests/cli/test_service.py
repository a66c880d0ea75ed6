"""The sidecar: its HTTP API in-process (fast), then the real process under signals.

The process tests use SQLite when the SQLite store is importable (it is the
store a sidecar runs with), so "nothing lost" is checked across a restart.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from adapters.base import OutgoingMessage, Readiness
from adapters.memory import MemoryBroker, MemoryTransport
from orchestrator.engine.operator import ActionResult
from orchestrator.sidecar.http import build_app
from orchestrator.sidecar.service import Sidecar
from orchestrator.sidecar.settings import Settings, parse_listen
from schemas.errors import ConfigError, StoreError

ROOT = Path(__file__).resolve().parents[2]
ORDER = str(ROOT / "sagas" / "order.py")
SAGAWIRE = str(Path(sys.executable).parent / "sagawire")


def _sqlite_available() -> bool:
    try:
        import orchestrator.store.sqlite  # noqa: F401
    except ImportError:
        return False
    return True


def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sagawire.db'}" if _sqlite_available() else "memory://"


def order_placed(order_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"evt-{order_id}",
        "source": "tests/shop",
        "type": "order.placed",
        "data": {
            "order_id": order_id,
            "customer_id": "c-1",
            "items": [{"sku": "book", "qty": 1}],
            "amount_cents": 1200,
        },
        **extra,
    }


def test_parse_listen() -> None:
    assert parse_listen("0.0.0.0:80") == ("0.0.0.0", 80)
    assert parse_listen("[::1]:8080") == ("::1", 8080)
    for bad in ("8080", "host:", ":80", "h:99999", "h:x"):
        with pytest.raises(ConfigError):
            parse_listen(bad)


# -- the Starlette app, in-process --------------------------------------------------


@pytest.fixture
async def sidecar(tmp_path: Path) -> AsyncIterator[Sidecar]:
    name = uuid.uuid4().hex
    MemoryBroker.named(name).record = True
    car = Sidecar(Settings(sagas=ORDER, broker=f"memory://{name}", store=store_url(tmp_path)))
    await car.open()
    yield car
    await car.close()
    MemoryBroker.forget(name)


async def test_alive_but_not_ready_until_consuming(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "alive"}
    r = await client.get("/readyz")
    assert r.status_code == 503
    assert r.json() == {
        "ready": False,
        "reason": "starting consumer",
        "checks": {"sidecar": "starting consumer"},
    }


async def test_post_publishes_to_the_event_type(
    client: httpx.AsyncClient, sidecar: Sidecar
) -> None:
    body = orjson.dumps(order_placed("o-1", correlationid="corr-1"))
    r = await client.post("/events", content=body)
    assert r.status_code == 202
    assert r.json() == {"id": "evt-o-1"}
    broker = sidecar.transport.broker  # type: ignore[union-attr]
    [sent] = broker.published("order.placed")
    assert sent.body == body
    assert sent.key == "corr-1"
    assert sent.message_id == "evt-o-1"
    assert sent.headers["content-type"] == "application/cloudevents+json"


async def test_key_falls_back_to_the_sagas_correlation(
    client: httpx.AsyncClient, sidecar: Sidecar
) -> None:
    r = await client.post("/events", content=orjson.dumps(order_placed("o-2")))
    assert r.status_code == 202
    [sent] = sidecar.transport.broker.published("order.placed")  # type: ignore[union-attr]
    assert sent.key == "o-2"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "body is not JSON"),
        (b"[1, 2]", "a CloudEvent is a JSON object"),
        (orjson.dumps({"specversion": "1.0", "type": "order.placed"}), "attribute 'id'"),
        (orjson.dumps(order_placed("o-3", specversion="0.3")), "attribute 'specversion'"),
    ],
)
async def test_bad_events_are_400_with_a_reason(
    client: httpx.AsyncClient, body: bytes, reason: str
) -> None:
    r = await client.post("/events", content=body)
    assert r.status_code == 400
    assert reason in r.json()["error"]


async def test_no_events_once_stopping(client: httpx.AsyncClient, sidecar: Sidecar) -> None:
    await sidecar.close()
    r = await client.post("/events", content=orjson.dumps(order_placed("o-4")))
    assert r.status_code == 503
    assert "not accepting" in r.json()["error"]
    assert (await client.get("/readyz")).json()["reason"] == "stopped"


async def test_admin_views(client: httpx.AsyncClient) -> None:
    sagas = (await client.get("/definitions")).json()
    assert [s["name"] for s in sagas] == ["order"]
    assert "order.placed" in sagas[0]["consumes"]
    assert "inventory.reserve" in sagas[0]["produces"]
    assert sagas[0]["mermaid"].startswith("stateDiagram-v2")
    assert (await client.get("/instances/nope/x")).status_code == 404
    assert (await client.get("/instances/order/unknown")).status_code == 404
    metrics = (await client.get("/metrics")).text
    assert "sagawire_transitions_total 0.0" in metrics
    assert 'sagawire_instances{status="running"} 0.0' in metrics
    assert "sagawire_ready 0.0" in metrics


async def test_run_in_process_until_stopped(tmp_path: Path) -> None:
    """The whole life in this event loop: ready, an event to its instance, orderly stop."""
    car = Sidecar(
        Settings(
            sagas=ORDER, broker=f"memory://{uuid.uuid4().hex}", store=store_url(tmp_path), port=0
        )
    )
    task = asyncio.create_task(car.run())
    async with httpx.AsyncClient() as c:
        base = await _until(lambda: f"http://{car.address}" if car.address else None)
        await _until_status(c, f"{base}/readyz", 200)
        r = await c.post(f"{base}/events", content=orjson.dumps(order_placed("o-5")))
        assert r.status_code == 202
        got = await _until_status(c, f"{base}/instances/order/o-5", 200)
        assert got["state"] == "inventory"
        assert got["history"][0]["message_id"] == "evt-o-5"
        metrics = (await c.get(f"{base}/metrics")).text
        assert "sagawire_transitions_total 1.0" in metrics
        assert "sagawire_ready 1.0" in metrics
    car.request_stop("test")
    done, _ = await asyncio.wait({task}, timeout=10)
    assert done, "the sidecar did not stop"
    assert task.result() == 0
    assert car.phase == "stopped"


def _take_down(store: object) -> list[bool]:
    """Make every store operation fail while the returned flag's first item is true."""
    down = [False]
    for name in ("load", "seen", "commit", "due_timers", "next_timer_due", "parked_keys",
                 "expired_parked", "pending_outbox", "mark_published", "ping", "counts"):  # fmt: skip
        method = getattr(store, name)

        async def guarded(*args: Any, __method: Any = method, **kwargs: Any) -> Any:
            if down[0]:
                raise StoreError("store: connection refused (test outage)")
            return await __method(*args, **kwargs)

        setattr(store, name, guarded)
    return down


async def test_readyz_and_events_say_the_store_is_down_and_recover(tmp_path: Path) -> None:
    """/readyz names the failing dependency, POST /events is a 503 while the store is
    down (the event would only wait on the broker, unhandled), and both recover."""
    car = Sidecar(
        Settings(sagas=ORDER, broker=f"memory://{uuid.uuid4().hex}", store="memory://", port=0)
    )
    task = asyncio.create_task(car.run())
    async with httpx.AsyncClient() as c:
        base = await _until(lambda: f"http://{car.address}" if car.address else None)
        ready = await _until_status(c, f"{base}/readyz", 200)
        assert ready["checks"] == {"engine": "ok", "broker": "ok", "store": "ok"}
        assert car.store is not None
        down = _take_down(car.store)
        down[0] = True
        r = await _until_status(c, f"{base}/readyz", 503)
        assert r["checks"]["store"].startswith("store unavailable"), r
        assert r["reason"].startswith("store: store unavailable"), r
        assert r["checks"]["broker"] == "ok"
        r2 = await c.post(f"{base}/events", content=orjson.dumps(order_placed("o-9")))
        assert r2.status_code == 503
        assert "store unavailable" in r2.json()["error"]
        metrics = (await c.get(f"{base}/metrics")).text
        assert "sagawire_store_up 0.0" in metrics
        assert "sagawire_store_outages_total 1.0" in metrics
        down[0] = False
        started = time.monotonic()
        await _until_status(c, f"{base}/readyz", 200)
        assert time.monotonic() - started < 2.0
        r3 = await c.post(f"{base}/events", content=orjson.dumps(order_placed("o-9")))
        assert r3.status_code == 202
    car.request_stop("test")
    await asyncio.wait_for(task, 10)


async def test_dead_letters_are_counted_by_reason_in_metrics(
    client: httpx.AsyncClient, sidecar: Sidecar
) -> None:
    assert sidecar.engine is not None and sidecar.transport is not None
    await sidecar.transport.publish(
        [
            OutgoingMessage("order.placed", b"{not json", "bad-1"),
            OutgoingMessage("order.placed", orjson.dumps(order_placed("x" * 2000)), "bad-2"),
        ]
    )
    await sidecar.engine.handle(sidecar.transport.poll(sidecar.engine.topology))  # type: ignore[attr-defined]
    metrics = (await client.get("/metrics")).text
    assert 'sagawire_dead_letters_total{reason="decode"} 1.0' in metrics
    assert 'sagawire_dead_letters_total{reason="limit"} 1.0' in metrics


async def test_stop_while_housekeeping_holds_the_engine_lock(tmp_path: Path) -> None:
    """Engine.run only cancels its consumer when the engine lock is free; if housekeeping
    holds it at that moment, the consumer idles forever. The sidecar must still stop."""
    car = Sidecar(
        Settings(
            sagas=ORDER,
            broker=f"memory://{uuid.uuid4().hex}",
            store="memory://",
            port=0,
            engine_grace=0.3,
        )
    )
    task = asyncio.create_task(car.run())
    await _until(lambda: car.readiness()[0])
    assert car.engine is not None
    async with car.engine.lock:
        car.request_stop("test")
        await _until(car._stopping.is_set)  # the engine is told to stop while locked
        await asyncio.sleep(0.05)
    done, _ = await asyncio.wait({task}, timeout=5)
    assert done, "the sidecar did not stop"
    assert task.result() == 0


async def _until(probe: Any, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


async def _until_status(c: httpx.AsyncClient, url: str, status: int, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            r = await c.get(url)
            if r.status_code == status:
                return r.json()
            last = (r.status_code, r.text)
        except httpx.TransportError as exc:
            last = exc
        await asyncio.sleep(0.05)
    raise AssertionError(f"{url} never answered {status}; last: {last!r}")


# -- the real process ---------------------------------------------------------------


class Process:
    """``sagawire run`` in a subprocess; learns its port from the "sidecar running" line."""

    def __init__(self, store: str) -> None:
        env = {**os.environ, "SAGAWIRE_LOG_LEVEL": "info"}
        self.proc = subprocess.Popen(
            [
                SAGAWIRE,
                "run",
                "--sagas",
                ORDER,
                "--broker",
                "memory://",
                "--store",
                store,
                "--http",
                "127.0.0.1:0",
            ],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            env=env,
            cwd=ROOT,
        )
        self.lines: list[str] = []
        self.address = ""
        self._running = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            if '"sidecar running"' in line:
                self.address = orjson.loads(line)["http"]
                self._running.set()

    def wait_running(self, timeout: float = 15) -> str:
        if not self._running.wait(timeout):
            self.proc.kill()
            self.proc.wait()
            self._reader.join(5)
            raise AssertionError("sidecar did not start:\n" + "\n".join(self.lines))
        return f"http://{self.address}"

    def terminate(self, timeout: float = 10) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("no exit after SIGTERM:\n" + "\n".join(self.lines)) from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(5)
        assert self.proc.stderr is not None
        self.proc.stderr.close()


@pytest.fixture
def process(tmp_path: Path) -> Iterator[Any]:
    started: list[Process] = []

    def start() -> Process:
        started.append(Process(store_url(tmp_path)))
        return started[-1]

    yield start
    for p in started:
        p.close()


async def test_sidecar_process(process: Any) -> None:
    p = process()
    base = p.wait_running()
    async with httpx.AsyncClient(base_url=base) as c:
        assert (await _until_status(c, "/healthz", 200)) == {"status": "alive"}
        await _until_status(c, "/readyz", 200)
        r = await c.post("/events", content=orjson.dumps(order_placed("p-1")))
        assert r.status_code == 202
        got = await _until_status(c, "/instances/order/p-1", 200)
        assert (got["state"], got["status"], got["version"]) == ("inventory", "running", 1)
        r = await c.post("/events", content=b"{oops")
        assert r.status_code == 400
        assert "not JSON" in r.json()["error"]
        r = await c.post("/events", content=orjson.dumps({"specversion": "1.0"}))
        assert r.status_code == 400
        assert "attribute 'id'" in r.json()["error"]
    started = time.monotonic()
    assert p.terminate() == 0, "\n".join(p.lines)
    assert time.monotonic() - started < 5
    assert any('"stopped"' in line for line in p.lines)


@pytest.mark.skipif(not _sqlite_available(), reason="a restart needs a durable store")
async def test_sigterm_under_load_loses_nothing(process: Any) -> None:
    """Every event that got a 202 has its instance after SIGTERM and a restart."""
    total = 400
    p = process()
    base = p.wait_running()
    accepted: list[str] = []
    answered = 0
    limits = httpx.Limits(max_connections=50)

    async def place(c: httpx.AsyncClient, i: int) -> None:
        nonlocal answered
        try:
            r = await c.post("/events", content=orjson.dumps(order_placed(f"load-{i}")))
        except httpx.TransportError:
            return
        finally:
            answered += 1
        if r.status_code == 202:
            accepted.append(f"load-{i}")
        else:
            assert r.status_code == 503, r.text

    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=10) as c:
        await _until_status(c, "/readyz", 200)
        tasks = [asyncio.create_task(place(c, i)) for i in range(total)]
        await _until(lambda: answered >= total // 4)
        code = await asyncio.to_thread(p.terminate)
        await asyncio.gather(*tasks)
    assert code == 0, "\n".join(p.lines)
    assert accepted, "no event was accepted before SIGTERM"
    assert not any('"level":"error"' in line for line in p.lines), "\n".join(p.lines)

    again = process()
    base = again.wait_running()
    async with httpx.AsyncClient(base_url=base, limits=limits) as c:
        missing = []

        async def check(order_id: str) -> None:
            r = await c.get(f"/instances/order/{order_id}")
            if r.status_code != 200 or r.json()["state"] != "inventory":
                missing.append(order_id)

        await asyncio.gather(*(check(o) for o in accepted))
    assert not missing, f"{len(missing)} of {len(accepted)} accepted events lost: {missing[:5]}"
    assert again.terminate() == 0


async def place_and_handle(client: httpx.AsyncClient, sidecar: Sidecar, order_id: str) -> None:
    """POST an order.placed, then let the engine handle what the broker holds."""
    assert sidecar.engine is not None
    event = order_placed(order_id, correlationid=order_id)
    await client.post("/events", content=orjson.dumps(event))
    transport = sidecar.transport
    assert transport is not None
    await sidecar.engine.handle(transport.poll(sidecar.engine.topology))  # type: ignore[attr-defined]


async def test_an_operator_aborts_an_instance_over_http(
    client: httpx.AsyncClient, sidecar: Sidecar
) -> None:
    await place_and_handle(client, sidecar, "o-9")
    r = await client.post("/instances/order/o-9/abort", params={"reason": "fraud"})
    assert r.status_code == 200
    assert r.json() == {"state": "aborted", "status": "aborted"}
    body = (await client.get("/instances/order/o-9")).json()
    assert body["failure"] == "fraud" and body["history"][-1]["to_state"] == "aborted"
    assert (await client.post("/instances/order/nope/abort")).status_code == 404
    assert (await client.post("/instances/nosaga/x/abort")).status_code == 404


async def test_an_instance_whose_state_no_longer_loads_is_a_409_that_says_why(
    client: httpx.AsyncClient, sidecar: Sidecar, tmp_path: Path
) -> None:
    await place_and_handle(client, sidecar, "o-8")
    with sqlite3.connect(tmp_path / "sagawire.db") as db:  # as a changed model finds it
        db.execute("UPDATE instances SET data = ? WHERE correlation_id = 'o-8'", (b"{}",))
    for r in (
        await client.get("/instances/order/o-8"),
        await client.post("/instances/order/o-8/abort"),
    ):
        assert r.status_code == 409
        assert "does not load as the saga's state model" in r.json()["error"]
        assert "order_id" in r.json()["error"]


async def test_events_are_refused_at_once_while_the_broker_is_down(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not after a publish timeout (13 s on NATS): /readyz already knows."""
    down = property(lambda self: Readiness(False, "broker down for the test"))
    monkeypatch.setattr(MemoryTransport, "readiness", down)
    r = await client.post("/events", content=orjson.dumps(order_placed("o-7")))
    assert r.status_code == 503
    assert "broker down for the test" in r.json()["error"]


async def test_an_event_the_broker_does_not_confirm_in_time_is_a_503(
    client: httpx.AsyncClient, sidecar: Sidecar, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broker that just went away is noticed by a request that times out (Kafka's
    readiness lags by a few seconds): the client hears so in bounded time."""

    async def hang(self: object, messages: object) -> None:
        await asyncio.sleep(3600)

    monkeypatch.setattr(MemoryTransport, "publish", hang)
    sidecar.settings = sidecar.settings.model_copy(update={"publish_timeout": 0.2})
    started = time.monotonic()
    r = await client.post("/events", content=orjson.dumps(order_placed("o-7")))
    assert r.status_code == 503
    assert time.monotonic() - started < 2.0
    assert "did not confirm event 'evt-o-7' within 0.2s" in r.json()["error"]


async def test_an_abort_that_did_not_take_is_a_409(
    client: httpx.AsyncClient, sidecar: Sidecar, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another replica kept moving the instance through every retry: not a 200."""
    await place_and_handle(client, sidecar, "o-6")
    assert sidecar.engine is not None
    running = await sidecar.engine.instance("order", "o-6")

    async def lost_race(saga: str, cid: str, action: str, **_: object) -> ActionResult:
        return ActionResult(running, f"the {action} of {saga!r} instance {cid!r} did not take")

    monkeypatch.setattr(sidecar.engine.operator, "act", lost_race)
    r = await client.post("/instances/order/o-6/abort")
    assert r.status_code == 409
    assert "did not take" in r.json()["error"]


async def test_a_tracked_flow_shows_its_steps_and_deviations(tmp_path: Path) -> None:
    """The checkout choreography over HTTP: an instance's view names each step's status
    and lists its deviations with their message ids; /metrics counts them by kind."""
    name = uuid.uuid4().hex
    car = Sidecar(
        Settings(
            sagas=str(ROOT / "sagas" / "checkout.py"), broker=f"memory://{name}", store="memory://"
        )
    )
    await car.open()
    try:
        assert car.engine is not None and car.transport is not None
        app = build_app(car)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://sidecar"
        ) as c:

            async def post(event: dict[str, Any]) -> None:
                r = await c.post("/events", content=orjson.dumps(event))
                assert r.status_code == 202, r.text
                await car.engine.handle(car.transport.poll(car.engine.topology))  # type: ignore[union-attr, attr-defined]

            await post(order_placed("o-1", correlationid="o-1"))
            reserved = {"order_id": "o-1", "reservation_id": "r-1"}
            for eid in ("res-1", "res-2"):
                await post(
                    {
                        "specversion": "1.0",
                        "id": eid,
                        "source": "inventory",
                        "type": "inventory.reserved",
                        "correlationid": "o-1",
                        "data": reserved,
                    }
                )
            view = (await c.get("/instances/checkout/o-1")).json()
            assert view["state"] == "payment"
            assert view["steps"] == {"inventory": "done", "payment": "active"}
            (dev,) = view["deviations"]
            assert dev["message_id"] == "res-2"
            assert dev["note"].startswith("deviation repeated: inventory.reserved res-2")
            metrics = (await c.get("/metrics")).text
            assert 'sagawire_deviations_total{kind="repeated",saga="checkout"} 1.0' in metrics
    finally:
        await car.close()
        MemoryBroker.forget(name)
