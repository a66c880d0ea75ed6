"""The harness itself: Chromium reaches the fixture's sidecar, screenshots land where the
docs say, the page guard catches a request off the sidecar, and the sidecar holds every
ending of an order for the console tests to find."""

from __future__ import annotations

import httpx
from playwright.sync_api import Page

from tests.console.browser import ARTIFACTS, PageLog, Screenshots
from tests.console.rig import ConsoleSidecar


def test_chromium_reads_the_api_document_and_calls_the_api_with_a_token(
    page: Page, shot: Screenshots, page_log: PageLog, console: ConsoleSidecar
) -> None:
    """The OpenAPI document, opened as a page, then read by the page's own JavaScript;
    then ``GET /sagas`` from the page with the read token, as the console will."""
    response = page.goto(f"{console.base_url}/openapi.json")
    assert response is not None and response.status == 200
    first = shot("openapi")
    name = "test_chromium_reads_the_api_document_and_calls_the_api_with_a_token"
    assert first == ARTIFACTS / name / "01-openapi.png"
    assert first.stat().st_size > 1000 and first.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    document = page.evaluate("JSON.parse(document.querySelector('pre').textContent)")
    assert document["info"]["title"] == "sagawire"
    assert {"/events", "/sagas", "/deadletters", "/overview"} <= set(document["paths"])

    listed = page.evaluate(
        """async (token) => {
            const r = await fetch("/sagas?saga=order&status=compensated&limit=5",
                                  {headers: {authorization: "Bearer " + token}});
            const refused = await fetch("/sagas?saga=order");
            return {status: r.status, body: await r.json(), refused: refused.status};
        }""",
        console.read_token,
    )
    assert listed["status"] == 200 and listed["refused"] == 401
    assert listed["body"]["instances"]
    assert {i["status"] for i in listed["body"]["instances"]} == {"compensated"}
    assert page_log.problems() == []


def test_a_request_off_the_sidecar_is_blocked_and_recorded(
    page: Page, shot: Screenshots, page_log: PageLog, console: ConsoleSidecar
) -> None:
    """A page that pulls a script from a CDN: the request never leaves, the page guard
    names it (and would fail the test had it not been expected and cleared)."""
    page.goto(f"{console.base_url}/healthz")
    page.set_content(
        '<title>offsite</title><script src="https://cdn.example.com/lib.js"></script>'
        "<script>window.lib.start()</script>"
    )
    shot("offsite")
    assert page.title() == "offsite"
    assert page_log.offsite == ["https://cdn.example.com/lib.js"]
    assert len(page_log.errors) == 1 and "TypeError" in page_log.errors[0]
    page_log.clear()


def test_the_sidecar_holds_every_ending_and_places_orders_on_demand(
    console: ConsoleSidecar,
) -> None:
    """Completed, compensated, compensation_failed and running orders are there (read
    token); a read token may not place orders; a coroutine runs on the sidecar's loop;
    a waiting order placed now stays running in shipping."""
    for status in ("completed", "compensated", "compensation_failed", "running"):
        page = console.get("/sagas", saga="order", status=status)
        assert page["instances"], f"no {status} order"
    with httpx.Client() as anonymous:
        assert anonymous.get(f"{console.base_url}/sagas").status_code == 401
    with console.client() as reader:
        assert reader.post("/events", content=b"{}").status_code == 403
    assert console.car is not None and console.car.store is not None
    assert console.run(console.car.store.ping()) is None  # on the sidecar's own loop

    [oid] = console.place_waiting_orders(1)

    def state() -> str | None:
        with console.client() as reader:
            r = reader.get(f"/sagas/order/{oid}")
            return r.json()["state"] if r.status_code == 200 else None

    console.wait_until(f"{oid} waits at shipping", lambda: state() == "shipping", timeout=20.0)
    detail = console.get(f"/sagas/order/{oid}")
    assert detail["status"] == "running"
    assert [h["message_type"] for h in detail["history"]][:3] == [
        "order.placed",
        "inventory.reserved",
        "payment.charged",
    ]
