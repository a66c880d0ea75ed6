"""The admin API over HTTP, in-process: listing and filters, one instance whole, the
actions and their refusals, tokens, bulk actions, dead letters and their redrive,
definitions, the OpenAPI document, and bad requests (4xx with a reason, never 500)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from openapi_spec_validator import validate

from adapters.memory import MemoryBroker, MemoryTransport
from orchestrator.sidecar.http import build_app
from orchestrator.sidecar.service import Sidecar
from orchestrator.sidecar.settings import Settings
from tests.cli.test_service import ORDER, order_placed

ADMIN = {"Authorization": "Bearer a-secret"}
READ = {"Authorization": "Bearer r-secret"}


async def _open(tmp_path: Path, **settings: Any) -> Sidecar:
    name = uuid.uuid4().hex
    MemoryBroker.named(name).record = True
    car = Sidecar(
        Settings(
            sagas=ORDER, broker=f"memory://{name}", store=f"sqlite:///{tmp_path / 'a.db'}",
            **settings,
        )
    )  # fmt: skip
    await car.open()
    return car


@pytest.fixture
async def sidecar(tmp_path: Path) -> AsyncIterator[Sidecar]:
    car = await _open(tmp_path)
    yield car
    await car.close()


@pytest.fixture
async def client(sidecar: Sidecar) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(sidecar))
    async with httpx.AsyncClient(transport=transport, base_url="http://sidecar") as c:
        yield c


async def handle(sidecar: Sidecar) -> None:
    engine, transport = sidecar.engine, sidecar.transport
    assert engine is not None and isinstance(transport, MemoryTransport)
    for _ in range(5):
        await engine.handle(transport.poll(engine.topology))


async def place(client: httpx.AsyncClient, sidecar: Sidecar, *ids: str) -> None:
    for oid in ids:
        r = await client.post("/events", content=orjson.dumps(order_placed(oid, correlationid=oid)))
        assert r.status_code == 202, r.text
    await handle(sidecar)


async def reply(
    sidecar: Sidecar, client: httpx.AsyncClient, type: str, oid: str, **data: Any
) -> None:
    event = {
        "specversion": "1.0", "id": f"{type}-{oid}-{uuid.uuid4().hex[:6]}", "source": "tests",
        "type": type, "correlationid": oid, "data": {"order_id": oid, **data},
    }  # fmt: skip
    r = await client.post("/events", content=orjson.dumps(event))
    assert r.status_code == 202, r.text
    await handle(sidecar)


def sent(sidecar: Sidecar, destination: str) -> list[dict[str, Any]]:
    broker = sidecar.transport.broker  # type: ignore[union-attr]
    return [orjson.loads(m.body) for m in broker.published(destination)]


# -- listing ------------------------------------------------------------------------------


async def test_list_filters_and_pages(client: httpx.AsyncClient, sidecar: Sidecar) -> None:
    await place(client, sidecar, *(f"o-{i}" for i in range(7)))
    await reply(sidecar, client, "inventory.rejected", "o-3", reason="none left")
    page = (await client.get("/sagas", params={"limit": 3})).json()
    assert len(page["instances"]) == 3 and page["next_cursor"]
    seen = [i["correlation_id"] for i in page["instances"]]
    while page["next_cursor"]:
        page = (
            await client.get("/sagas", params={"limit": 3, "cursor": page["next_cursor"]})
        ).json()
        seen += [i["correlation_id"] for i in page["instances"]]
    assert sorted(seen) == [f"o-{i}" for i in range(7)] and seen[0] == "o-3"  # newest first
    first = (await client.get("/sagas", params={"status": "compensated"})).json()["instances"]
    assert [(i["correlation_id"], i["state"]) for i in first] == [("o-3", "compensated")]
    assert first[0]["failure"] == "none left"
    assert first[0]["updated_at"].endswith("Z") or "+00:00" in first[0]["updated_at"]
    running = await client.get("/sagas", params={"saga": "order", "state": "inventory"})
    assert len(running.json()["instances"]) == 6
    one = await client.get("/sagas", params={"correlation_id": "o-5"})
    assert [i["correlation_id"] for i in one.json()["instances"]] == ["o-5"]
    future = await client.get("/sagas", params={"updated_after": "2999-01-01T00:00:00Z"})
    assert future.json() == {"instances": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("params", "status", "needle"),
    [
        ({"cursor": "not-a-cursor"}, 400, "cursor is not one this API gave"),
        ({"cursor": "WzEsMl0"}, 400, "cursor is not one this API gave"),  # [1,2]
        ({"status": "sleeping"}, 400, "status 'sleeping' is not one of"),
        ({"state": "inventory"}, 400, "state= needs saga="),
        ({"saga": "nope"}, 400, "no saga named 'nope'"),
        ({"updated_before": "yesterday"}, 400, "not an ISO 8601 time"),
        ({"limit": "0"}, 422, "limit"),
        ({"limit": "5000"}, 422, "limit"),
        ({"limit": "many"}, 422, "limit"),
        ({"stuck": "perhaps"}, 422, "stuck"),
    ],
)
async def test_bad_filters_are_4xx_with_a_reason(
    client: httpx.AsyncClient, params: dict[str, str], status: int, needle: str
) -> None:
    r = await client.get("/sagas", params=params)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]


async def test_stuck_instances_by_the_default_slo(tmp_path: Path) -> None:
    car = await _open(tmp_path, stuck_after=0.05)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=build_app(car)), base_url="http://s"
        ) as c:
            await place(c, car, "o-1")
            await asyncio.sleep(0.1)
            stuck = (await c.get("/sagas", params={"stuck": "true"})).json()["instances"]
            assert [(i["correlation_id"], i["stuck"]) for i in stuck] == [("o-1", True)]
            await reply(car, c, "inventory.rejected", "o-1", reason="x")
            assert (await c.get("/sagas", params={"stuck": "true"})).json()["instances"] == []
    finally:
        await car.close()


# -- one instance ---------------------------------------------------------------------------


async def test_one_instance_whole(client: httpx.AsyncClient, sidecar: Sidecar) -> None:
    await place(client, sidecar, "o-1")
    r = await client.get("/sagas/order/o-1")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["state"], body["status"], body["version"]) == ("inventory", "running", 1)
    assert len(body["definition_version"]) == 12
    assert body["data"]["order_id"] == "o-1"
    [entry] = body["history"]
    assert entry["kind"] == "event" and entry["message_type"] == "order.placed"
    assert entry["commands"][0].startswith("inventory.reserve:")
    assert {t["name"] for t in body["timers"]} == {"inventory.timeout"}
    assert body["outbox"] == []  # published already
    assert body["parked"] == []
    assert (await client.get("/sagas/order/nope")).status_code == 404
    assert "no saga named" in (await client.get("/sagas/nosaga/x")).json()["error"]


async def test_a_slash_in_a_correlation_id(client: httpx.AsyncClient, sidecar: Sidecar) -> None:
    await place(client, sidecar, "a/b")
    assert (await client.get("/sagas/order/a/b")).json()["correlation_id"] == "a/b"
    r = await client.post("/sagas/order/a/b/abort", json={"reason": "x"})
    assert r.status_code == 200 and r.json()["state"] == "compensated"  # nothing done yet


# -- actions ------------------------------------------------------------------------------


async def test_abort_compensates_and_records_who_and_why(
    client: httpx.AsyncClient, sidecar: Sidecar
) -> None:
    await place(client, sidecar, "o-1")
    await reply(sidecar, client, "inventory.reserved", "o-1", reservation_id="r-1")
    r = await client.post("/sagas/order/o-1/abort", json={"reason": "fraud"})
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["status"]) == ("compensating:inventory", "running")
    assert [c["type"] for c in sent(sidecar, "inventory.release")] == ["inventory.release"]
    history = (await client.get("/sagas/order/o-1")).json()["history"]
    assert history[-1]["kind"] == "operator"
    assert history[-1]["note"] == "operator abort by anonymous: fraud"
    again = await client.post("/sagas/order/o-1/abort", json={"reason": "again"})
    assert again.status_code == 409
    assert "no compensation on abort" in again.json()["error"]
    stop = await client.post("/sagas/order/o-1/abort", params={"compensate": "false"})
    assert stop.json()["status"] == "aborted"
    done = await client.post("/sagas/order/o-1/abort")
    assert done.status_code == 409 and "already aborted" in done.json()["error"]


async def test_retry_and_resume_and_their_409s(client: httpx.AsyncClient, sidecar: Sidecar) -> None:
    await place(client, sidecar, "o-1")
    r = await client.post("/sagas/order/o-1/retry", json={"reason": "stock is back"})
    assert r.status_code == 200, r.text
    assert [c["attempt"] for c in sent(sidecar, "inventory.reserve")] == [1, 2]
    resume = await client.post("/sagas/order/o-1/resume")
    assert resume.status_code == 409
    assert "only a compensation_failed instance resumes" in resume.json()["error"]
    assert (await client.post("/sagas/order/nope/retry")).status_code == 404
    bad = await client.post("/sagas/order/o-1/retry", json={"reason": 5})
    assert bad.status_code == 422 and "reason" in bad.json()["error"]
    huge = await client.post("/sagas/order/o-1/retry", json={"reason": "x" * 3000})
    assert huge.status_code == 422


# -- tokens ---------------------------------------------------------------------------------


async def test_tokens_guard_reads_and_writes(tmp_path: Path) -> None:
    car = await _open(tmp_path, admin_token="alice=a-secret", read_token="r-secret")
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=build_app(car)), base_url="http://s"
        ) as c:
            assert (await c.get("/healthz")).status_code == 200
            assert (await c.get("/readyz")).status_code in (200, 503)
            for path in ("/sagas", "/definitions", "/deadletters", "/metrics"):
                assert (await c.get(path)).status_code == 401, path
                assert (await c.get(path, headers=READ)).status_code == 200, path
                assert (await c.get(path, headers=ADMIN)).status_code == 200, path
            wrong = await c.get("/sagas", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401 and wrong.json() == {"error": "unknown token"}
            assert wrong.headers["www-authenticate"] == "Bearer"
            body = orjson.dumps(order_placed("o-1", correlationid="o-1"))
            assert (await c.post("/events", content=body)).status_code == 401
            read_post = await c.post("/events", content=body, headers=READ)
            assert read_post.status_code == 403 and "may read, not change" in read_post.text
            assert (await c.post("/events", content=body, headers=ADMIN)).status_code == 202
            await handle(car)
            r = await c.post("/sagas/order/o-1/abort", json={"reason": "ops"}, headers=ADMIN)
            assert r.status_code == 200
            history = (await c.get("/sagas/order/o-1", headers=READ)).json()["history"]
            assert history[-1]["note"] == "operator abort by alice: ops"
            assert (await c.post("/bulk/abort", json={}, headers=READ)).status_code == 403
    finally:
        await car.close()


async def test_bodies_over_the_limit_are_413(client: httpx.AsyncClient) -> None:
    r = await client.post("/bulk/abort", content=b"{" + b" " * (2 << 20) + b"}")
    assert r.status_code == 413 and "max_request_bytes" in r.json()["error"]


# -- POST /events validates ---------------------------------------------------------------


async def test_events_with_bad_data_are_422_with_the_field(client: httpx.AsyncClient) -> None:
    event = order_placed("o-1", correlationid="o-1")
    del event["data"]["customer_id"]
    event["data"]["amount_cents"] = "lots"
    r = await client.post("/events", content=orjson.dumps(event))
    assert r.status_code == 422
    body = r.json()
    assert "customer_id" in body["error"]
    assert {tuple(e["loc"]) for e in body["detail"]} == {("customer_id",), ("amount_cents",)}


# -- bulk -----------------------------------------------------------------------------------


async def _until_done(client: httpx.AsyncClient, job: str) -> dict[str, Any]:
    for _ in range(200):
        body: dict[str, Any] = (await client.get(f"/bulk/{job}")).json()
        if body["state"] != "running":
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"bulk job {job} still running")


async def test_bulk_abort_dry_run_then_run(client: httpx.AsyncClient, sidecar: Sidecar) -> None:
    await place(client, sidecar, *(f"o-{i}" for i in range(5)))
    await reply(sidecar, client, "inventory.rejected", "o-0", reason="x")
    dry = await client.post("/bulk/abort", params={"dry_run": "true"}, json={"status": "running"})
    assert dry.status_code == 200 and dry.json()["matched"] == 4
    assert (await client.get("/sagas", params={"status": "running"})).json()["instances"]
    r = await client.post(
        "/bulk/abort", json={"status": "running", "compensate": False, "reason": "incident 7"}
    )
    assert r.status_code == 202, r.text
    job = await _until_done(client, r.json()["id"])
    assert (job["state"], job["matched"], job["done"], job["refused"]) == ("done", 4, 4, 0)
    aborted = (await client.get("/sagas", params={"status": "aborted"})).json()["instances"]
    assert len(aborted) == 4
    note = (await client.get("/sagas/order/o-1")).json()["history"][-1]["note"]
    assert note == f"operator abort by anonymous: bulk {job['id']}: incident 7"
    assert (await client.get("/bulk/nope")).status_code == 404
    late = await client.post(f"/bulk/{job['id']}/cancel")
    assert late.status_code == 409
    assert (await client.post("/bulk/explode", json={})).status_code == 422
    bad = await client.post("/bulk/retry", json={"status": "sleeping"})
    assert bad.status_code == 400


async def test_a_bulk_action_can_be_cancelled(client: httpx.AsyncClient, sidecar: Sidecar) -> None:
    await place(client, sidecar, *(f"o-{i}" for i in range(120)))
    r = await client.post("/bulk/abort", json={"compensate": False})
    cancelled = await client.post(f"/bulk/{r.json()['id']}/cancel")
    assert cancelled.status_code == 200
    job = await _until_done(client, r.json()["id"])
    assert job["state"] == "cancelled" and job["done"] < 120


# -- dead letters -----------------------------------------------------------------------------


async def test_dead_letters_are_kept_listed_and_redriven_once(
    client: httpx.AsyncClient, sidecar: Sidecar
) -> None:
    await place(client, sidecar, "o-1")
    await reply(sidecar, client, "inventory.rejected", "o-1", reason="x")  # compensated
    late = {
        "specversion": "1.0", "id": "late-1", "source": "tests", "type": "inventory.reserved",
        "correlationid": "o-1", "data": {"order_id": "o-1", "reservation_id": "r"},
    }  # fmt: skip
    assert (await client.post("/events", content=orjson.dumps(late))).status_code == 202
    await handle(sidecar)
    page = (await client.get("/deadletters")).json()
    [dead] = page["dead_letters"]
    assert (dead["message_id"], dead["type"], dead["saga"]) == (
        "late-1",
        "inventory.reserved",
        "order",
    )
    assert dead["kind"] == "rejected" and "already compensated" in dead["reason"]
    assert orjson.loads(dead["body"])["id"] == "late-1"
    assert (await client.get("/deadletters", params={"kind": "decode"})).json()[
        "dead_letters"
    ] == []
    assert (
        len(
            (await client.get("/deadletters", params={"reason": "compensated"})).json()[
                "dead_letters"
            ]
        )
        == 1
    )
    r = await client.post(f"/deadletters/{dead['id']}/redrive")
    assert r.status_code == 200, r.text
    assert sidecar.engine is not None
    await sidecar.engine.relay_pending()  # the copy went through the outbox, as a command does
    assert len([m for m in sent(sidecar, "inventory.reserved") if m["id"] == "late-1"]) == 2
    await handle(sidecar)  # handled again (not a duplicate): dead-lettered again, kept again
    assert len((await client.get("/deadletters")).json()["dead_letters"]) == 2
    again = await client.post(f"/deadletters/{dead['id']}/redrive")
    assert again.status_code == 409 and "was redriven at" in again.json()["error"]
    assert (await client.post("/deadletters/99999/redrive")).status_code == 404
    assert (await client.post("/deadletters/x/redrive")).status_code == 422
    bulk = await client.post("/bulk/redrive", json={"type": "inventory.reserved"})
    job = await _until_done(client, bulk.json()["id"])
    assert (job["state"], job["done"]) == ("done", 1)


# -- definitions and the document --------------------------------------------------------


async def test_definitions(client: httpx.AsyncClient) -> None:
    [order] = (await client.get("/definitions")).json()
    assert order["name"] == "order" and order["kind"] == "steps"
    assert "compensating:inventory" in order["states"]
    assert order["mermaid"].startswith("stateDiagram-v2")
    assert {s["name"] for s in order["steps"]} == {"inventory", "payment", "shipping"}
    assert any(t["on"] == "inventory.rejected" for t in order["transitions"])


async def test_openapi_document_is_valid_3_1(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    validate(doc)
    paths = set(doc["paths"])
    for path in (
        "/sagas", "/sagas/{saga}/{correlation_id}", "/sagas/{saga}/{correlation_id}/abort",
        "/sagas/{saga}/{correlation_id}/retry", "/sagas/{saga}/{correlation_id}/resume",
        "/bulk/{action}", "/bulk/{job_id}", "/bulk/{job_id}/cancel", "/deadletters",
        "/deadletters/{id}/redrive", "/definitions", "/events", "/healthz", "/readyz",
    ):  # fmt: skip
        assert path in paths, path


async def test_unknown_routes_and_methods_are_json_4xx(client: httpx.AsyncClient) -> None:
    r = await client.get("/nothing/here")
    assert r.status_code == 404 and "error" in r.json()
    r = await client.delete("/sagas")
    assert r.status_code == 405 and "error" in r.json()


async def test_overview_counts_per_saga(client: httpx.AsyncClient, sidecar: Sidecar) -> None:
    await place(client, sidecar, "o-1", "o-2", "o-3")
    await reply(sidecar, client, "inventory.rejected", "o-1", reason="none")
    body = (await client.get("/overview")).json()
    [order] = body["sagas"]
    assert order["name"] == "order" and order["started"] == 3
    assert order["instances"] == {"running": 2, "compensated": 1}
    assert order["states"]["inventory"] == {"running": 2}
    assert order["finished"] == {"compensated": 1}
    assert body["dead_letters"] == 0 and body["recent_deviations"] == []


async def test_asyncapi_document_of_the_loaded_sagas(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/asyncapi.json")).json()
    assert doc["asyncapi"] == "3.0.0"
    assert any("order.placed" in name for name in doc["channels"])


async def test_a_read_token_alone_leaves_no_action_open(tmp_path: Path) -> None:
    car = await _open(tmp_path, read_token="r-secret")
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=build_app(car)), base_url="http://s"
        ) as c:
            assert (await c.get("/sagas", headers=READ)).status_code == 200
            assert (await c.get("/sagas")).status_code == 401
            for headers in ({}, READ):
                r = await c.post("/bulk/abort", json={}, headers=headers)
                assert r.status_code == 403, r.text
                assert "SAGAWIRE_ADMIN_TOKEN" in r.json()["error"]
    finally:
        await car.close()
