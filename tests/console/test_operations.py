"""The operator's pages beyond one instance, in Chromium: Dead letters (listed with
their original bytes shown as text or hex, redriven once), Bulk actions (a counted
abort, confirmed, followed to its end) and Definitions (each saga drawn, its steps and
its channels); all of them on a narrow window and by keyboard.

Dead letters are made as they are in production: a late reply to a finished order
(``POST /events``: the engine dead-letters it as ``rejected``), and bytes that are no
CloudEvent at all published straight onto a saga's topic of the memory broker (the
engine dead-letters them as ``decode``). Each test owns its ids (a uuid), and filters by
them, since the sidecar is shared by the package's tests.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from playwright.sync_api import Dialog, Locator, Page, Request, Route, ViewportSize, expect

from adapters.base import OutgoingMessage
from tests.console.browser import PageLog, Screenshots
from tests.console.rig import ConsoleSidecar

XSS = "<script>alert(1)</script>"
IMG = '<img src=x onerror="alert(2)">'
NARROW: ViewportSize = {"width": 420, "height": 800}


# -- helpers ------------------------------------------------------------------------------


def open_console(page: Page, console: ConsoleSidecar, hash_: str) -> None:
    """Open ``hash_`` of the console and give the admin token when it asks, as an
    operator does once per tab."""
    page.goto(f"{console.base_url}/ui/{hash_}")
    dialog = page.locator("dialog.token-dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Token").fill(console.admin_token)
    dialog.get_by_role("button", name="Use token").click()
    expect(dialog).to_have_count(0)


def open_console_hash(page: Page, hash_: str) -> None:
    """Go to another page of the console already open (the token is kept)."""
    page.evaluate("hash => { window.location.hash = hash; }", hash_)
    expect(page.locator("main .page")).to_have_count(1)


def alerts(page: Page) -> list[str]:
    """Every JavaScript dialog the page opens (none should: the console confirms with
    its own <dialog>), dismissed and recorded."""
    fired: list[str] = []

    def seen(dialog: Dialog) -> None:
        fired.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", seen)
    return fired


def late_reply(console: ConsoleSidecar, message_id: str, **data: Any) -> str:
    """Post ``inventory.reserved`` for an order that completed long ago: the engine
    dead-letters it (``rejected``, "already completed"). The order's id."""
    [done] = console.get("/sagas", saga="order", status="completed", limit=1)["instances"]
    oid = str(done["correlation_id"])
    event = {
        "specversion": "1.0", "id": message_id, "source": "tests/console/operations",
        "type": "inventory.reserved", "correlationid": oid,
        "data": {"order_id": oid, "reservation_id": f"r-{message_id}", **data},
    }  # fmt: skip
    with console.client(admin=True) as http:
        r = http.post(
            "/events",
            content=orjson.dumps(event),
            headers={"content-type": "application/cloudevents+json"},
        )
        assert r.status_code == 202, r.text
    return oid


def publish_raw(console: ConsoleSidecar, destination: str, body: bytes, message_id: str) -> None:
    """Put ``body`` on the memory broker as another service would: no CloudEvent, no
    check on the way (``POST /events`` would refuse it with a 400)."""
    car, loop = console.car, console._loop
    assert car is not None and car.engine is not None and loop is not None
    message = OutgoingMessage(destination=destination, body=body, message_id=message_id)
    future = asyncio.run_coroutine_threadsafe(car.engine.transport.publish([message]), loop)
    future.result(timeout=10)


def dead_letters(console: ConsoleSidecar, **params: Any) -> list[dict[str, Any]]:
    return list(console.get("/deadletters", **params)["dead_letters"])


def wait_dead(console: ConsoleSidecar, what: str, **params: Any) -> list[dict[str, Any]]:
    console.wait_until(what, lambda: bool(dead_letters(console, **params)), timeout=20.0)
    return dead_letters(console, **params)


def tab_to(page: Page, target: Locator, limit: int = 120) -> None:
    """Press Tab until ``target`` has the focus (it must be reachable by keyboard)."""
    page.locator("body").focus()
    for _ in range(limit):
        page.keyboard.press("Tab")
        if target.evaluate("el => el === document.activeElement"):
            return
    raise AssertionError(f"{target} is not reachable with Tab within {limit} presses")


def fits(page: Page) -> bool:
    """Nothing wider than the window but what scrolls in its own box (tables, code)."""
    return bool(
        page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1")
    )


# -- dead letters -------------------------------------------------------------------------


def test_a_dead_letter_is_redriven_once_from_the_dead_letters_page(
    page: Page, shot: Screenshots, console: ConsoleSidecar
) -> None:
    fired = alerts(page)
    mid = f"late-{uuid.uuid4().hex[:10]}"
    oid = late_reply(console, mid)
    [dead] = wait_dead(console, f"{mid} dead-lettered", reason=mid)
    assert dead["kind"] == "rejected" and dead["redriven_at"] is None

    open_console(page, console, f"#/deadletters?reason={mid}")
    table = page.locator("table.deadletters")
    row = table.locator(f'tr.dl-row[data-id="{dead["id"]}"]')
    expect(row).to_be_visible()
    expect(row).to_contain_text("inventory.reserved")
    expect(row).to_contain_text("rejected")
    expect(row.get_by_role("link", name=oid)).to_have_attribute(
        "href", f"#/instance/{dead['saga']}/{oid}"
    )
    more = table.locator("tr.dl-more").first
    more.locator("summary").click()
    expect(more.locator("pre.bytes")).to_contain_text(f'"id": "{mid}"')
    shot("dead letter expanded")

    row.get_by_role("button", name=f"Redrive dead letter {dead['id']}").click()
    confirm = page.locator("dialog.confirm-dialog")
    expect(confirm).to_contain_text(f"Redrive dead letter {dead['id']}?")
    expect(confirm).to_contain_text("inventory.reserved")
    shot("redrive confirmation")
    confirm.get_by_role("button", name="Redrive", exact=True).click()
    expect(row).to_contain_text("by admin, just now")
    expect(row.get_by_role("button", name=f"Redrive dead letter {dead['id']}")).to_be_disabled()
    shot("redriven")

    # The API agrees, once: the copy was handled again and dead-lettered again (a new
    # record); the first one is marked and refuses a second redrive.
    [first] = dead_letters(console, reason=mid, redriven="true")
    assert first["id"] == dead["id"] and first["redriven_by"] == "admin"
    wait_dead(console, f"{mid}'s copy dead-lettered again", reason=mid, redriven="false")

    # Shown with the redriven ones: marked, its button disabled with the reason.
    page.get_by_label("show redriven").check()
    page.get_by_role("button", name="Search").click()
    expect(page).to_have_url(f"{console.base_url}/ui/#/deadletters?reason={mid}&redriven=all")
    row = page.locator(f'tr.dl-row[data-id="{dead["id"]}"]')
    expect(row).to_contain_text("by admin at ")
    expect(row).to_contain_text("already redriven")
    expect(row.get_by_role("button", name=f"Redrive dead letter {dead['id']}")).to_be_disabled()
    expect(page.locator("tr.dl-row")).to_have_count(2)
    shot("redriven listed")

    # "Redrive all matching" hands the filters to the bulk page.
    page.get_by_role("link", name="Redrive all matching...").click()
    expect(page).to_have_url(f"{console.base_url}/ui/#/bulk?action=redrive&reason_contains={mid}")
    expect(page.get_by_role("heading", name="Bulk actions")).to_be_visible()
    expect(page.get_by_role("radio", name="redrive")).to_be_checked()
    expect(page.locator("#bulk-reason_contains")).to_have_value(mid)
    page.get_by_role("button", name="Count dead letters").click()
    expect(page.locator(".bulk-count")).to_have_text("1 dead letter matches")
    shot("bulk redrive counted")
    assert fired == []


def test_dead_letter_bytes_show_as_text_or_hex_never_as_html(
    page: Page, shot: Screenshots, console: ConsoleSidecar, page_log: PageLog
) -> None:
    fired = alerts(page)
    tag = uuid.uuid4().hex[:10]
    script_id = f"{XSS}{IMG}-{tag}"
    late_reply(console, script_id, note=f"{XSS} {IMG}")
    binary_id = f"bin-{tag}"
    raw = b"\x00\x01\x02sagawire\xff\xfe" + tag.encode() + b"\x7f"
    publish_raw(console, "inventory.reserved", raw, binary_id)
    [scripted] = wait_dead(console, "the <script> reply dead-lettered", reason=tag)
    assert scripted["message_id"] == script_id
    console.wait_until(
        "the binary message dead-lettered",
        lambda: any(tag in d["body"] for d in dead_letters(console, kind="decode")),
        timeout=20.0,
    )
    [binary] = [d for d in dead_letters(console, kind="decode") if tag in d["body"]]
    assert binary["type"] == "inventory.reserved" and binary["bytes"] == len(raw)

    open_console(page, console, f"#/deadletters?reason={tag}")
    row = page.locator(f'tr.dl-row[data-id="{scripted["id"]}"]')
    expect(row.locator("td.dl-reason")).to_contain_text(f"{XSS}{IMG}-{tag}")
    more = page.locator("tr.dl-more").first
    more.locator("summary").click()
    body = more.locator("pre.bytes")
    expect(body).to_contain_text(f'"note": "{XSS} <img src=x onerror=\\"alert(2)\\">"')
    expect(body).not_to_have_class("bytes hex")
    expect(more.locator("dd").first).to_have_text(script_id)
    assert page.locator("main script, main img").count() == 0
    shot("script payload shown as text")

    open_console_hash(page, "#/deadletters?kind=decode&type=inventory.reserved")
    more = page.locator(f'tr.dl-row[data-id="{binary["id"]}"] + tr.dl-more')
    more.locator("summary").click()
    hexed = more.locator("pre.bytes.hex")
    # 00 01 02, "sagawire", then each invalid byte as U+FFFD (ef bf bd), as the API
    # hands it over (UTF-8, invalid bytes replaced), and the tag; 16 bytes a line.
    expect(hexed).to_contain_text(
        "000000  00 01 02 73 61 67 61 77 69 72 65 ef bf bd ef bf\n000010  bd"
    )
    expect(hexed).to_have_attribute("title", "binary: shown as hex")
    expect(page.locator(f'tr.dl-row[data-id="{binary["id"]}"]')).to_contain_text("decode")
    shot("binary payload shown as hex")
    assert fired == []
    assert page.locator("main script, main img").count() == 0
    assert page_log.problems() == []


# -- bulk actions -------------------------------------------------------------------------


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def test_a_bulk_abort_is_counted_confirmed_and_followed_to_its_end(
    page: Page, shot: Screenshots, console: ConsoleSidecar
) -> None:
    fired = alerts(page)
    since = time.time() - 0.001
    ids = console.place_waiting_orders(3, prefix=f"bulk-{uuid.uuid4().hex[:6]}")

    def waiting() -> bool:
        return all(console.get(f"/sagas/order/{oid}")["state"] == "shipping" for oid in ids)

    console.wait_until("the bulk test's orders wait at shipping", waiting, timeout=30.0)
    reason = f"carrier gone {ids[0]}"

    # Linked as the Instances page would, with its filters: the form comes pre-filled.
    open_console(
        page, console,
        f"#/bulk?saga=order&status=running&state=shipping&updated_after={iso(since)}",
    )  # fmt: skip
    expect(page.get_by_role("radio", name="abort")).to_be_checked()
    expect(page.get_by_label("compensate what they did")).to_be_checked()
    expect(page.locator("#bulk-saga")).to_have_value("order")
    expect(page.locator("#bulk-status")).to_have_value("running")
    expect(page.locator("#bulk-state")).to_have_value("shipping")
    expect(page.locator("#bulk-updated_after")).to_have_value(iso(since))
    run = page.locator(".bulk-form button.danger")
    expect(run).to_be_disabled()
    page.get_by_label("reason (recorded in each one's history)").fill(reason)

    page.get_by_role("button", name="Count instances").click()
    count = page.locator(".bulk-count")
    expect(count).to_have_text("3 instances match")
    expect(run).to_have_text("Run on 3")
    expect(run).to_be_enabled()
    shot("bulk abort counted")

    # A changed filter takes the count back: only what was counted can be run.
    page.locator("#bulk-status").select_option("completed")
    expect(run).to_be_disabled()
    expect(count).to_have_text("")
    page.locator("#bulk-status").select_option("running")
    page.get_by_role("button", name="Count instances").click()
    expect(run).to_have_text("Run on 3")

    run.click()
    confirm = page.locator("dialog.confirm-dialog")
    expect(confirm).to_contain_text("Abort 3 instances?")
    expect(confirm).to_contain_text("abort (compensating what they did)")
    expect(confirm).to_contain_text(reason)
    expect(confirm.get_by_role("button", name="Cancel")).to_be_focused()
    shot("bulk abort confirmation")
    confirm.get_by_role("button", name="Abort 3 instances").click()

    job = page.locator(".bulk-job")
    expect(job.locator(".badge")).to_have_text("done", timeout=20_000)
    expect(job.locator('[data-count="matched"]')).to_have_text("3")
    expect(job.locator('[data-count="done"]')).to_have_text("3")
    expect(job.locator('[data-count="refused"]')).to_have_text("0")
    expect(job.locator("progress")).to_have_attribute("value", "3")
    expect(job).to_contain_text(reason)
    shot("bulk abort done")

    # The API agrees: each is aborted, or compensating what it did (payment's refund,
    # inventory's release) on its way to compensated; its history names the job.
    job_id = str(job.locator("h2").text_content()).split("job ")[1].split(" ")[0]
    for oid in ids:
        detail = console.get(f"/sagas/order/{oid}")
        assert detail["state"] != "shipping", detail
        assert detail["status"] in ("aborted", "compensated", "compensation_failed") or (
            detail["status"] == "running" and detail["state"].startswith("compensating:")
        ), detail
        notes = [h["note"] for h in detail["history"] if h["kind"] == "operator"]
        assert any(f"bulk {job_id}: {reason}" in n for n in notes), notes

    # The job's id is in the hash: a reload shows its progress again.
    assert f"job={job_id}" in page.url
    page.reload()
    expect(page.locator(".bulk-job .badge")).to_have_text("done")
    expect(page.locator('.bulk-job [data-count="done"]')).to_have_text("3")
    expect(page.locator("#bulk-reason")).to_have_value(reason)
    shot("bulk job after reload")
    assert fired == []


# -- definitions --------------------------------------------------------------------------


def test_definitions_show_each_saga_drawn_with_its_steps_and_channels(
    page: Page, shot: Screenshots, console: ConsoleSidecar
) -> None:
    defs = {d["name"]: d for d in console.get("/definitions")}
    assert set(defs) == {"order", "checkout"}
    open_console(page, console, "#/definitions")
    for name, definition in defs.items():
        card = page.locator(f'section[aria-label="saga {name}"]')
        figure = card.locator("figure.diagram")
        expect(figure).to_have_attribute("data-drawn", "true", timeout=20_000)
        expect(figure.locator("svg")).to_have_count(1)
        expect(card.locator("table.steps tbody tr")).to_have_count(len(definition["steps"]))
        expect(card).to_contain_text(definition["version"])
        channels = card.locator("table.channels")
        # A row per message it consumes or produces, a column per default broker.
        messages = set(definition["consumes"]) | set(definition["produces"])
        expect(channels.locator("tbody tr")).to_have_count(len(messages))
        for broker in ("kafka", "nats", "amqp"):
            expect(channels.locator("thead")).to_contain_text(broker)
        placed = channels.locator("tbody tr", has_text="order.placed")
        expect(placed.locator("td.mono")).to_have_text(["order.placed"] * 3)
        expect(placed.locator("td").first).to_have_text("consumes")
    order = page.locator('section[aria-label="saga order"]')
    shipping = order.locator("table.steps tbody tr", has_text="shipping")
    expect(shipping).to_contain_text("shipping.schedule")
    expect(shipping).to_contain_text("600 s (10 min)")
    expect(shipping).to_contain_text("5 s")  # its SLO
    inventory = order.locator("table.steps tbody tr", has_text="inventory.reserve")
    expect(inventory).to_contain_text("inventory.release -> inventory.released")
    checkout = page.locator('section[aria-label="saga checkout"]')
    expect(checkout.locator("table.steps tbody tr").first).to_contain_text("observed")
    expect(checkout.locator("table.steps thead")).to_contain_text("deadline")
    shot("definitions")

    order.get_by_role("link", name="order", exact=True).click()
    expect(page).to_have_url(f"{console.base_url}/ui/#/definitions/order")
    expect(page.locator("section.definition")).to_have_count(1)
    expect(page.locator("section.definition figure.diagram svg")).to_have_count(1)
    order = page.locator('section[aria-label="saga order"]')
    order.get_by_text("transitions (").click()
    expect(order.locator("table.transitions tbody tr").first).to_be_visible()
    shot("definition of order")


# -- a narrow window, and the keyboard ---------------------------------------------------


def test_the_pages_fit_a_narrow_window_and_work_by_keyboard(
    page: Page, shot: Screenshots, console: ConsoleSidecar
) -> None:
    fired = alerts(page)
    mid = f"kbd-{uuid.uuid4().hex[:10]}"
    late_reply(console, mid)
    [dead] = wait_dead(console, f"{mid} dead-lettered", reason=mid)

    # Bulk actions at 1280x800, by keyboard: the action, the count, the confirmation
    # (which Escape cancels: nothing runs).
    open_console(page, console, "#/bulk?saga=order&status=compensation_failed")
    retry = page.get_by_role("radio", name="retry")
    tab_to(page, page.get_by_role("radio", name="abort"))
    page.keyboard.press("ArrowRight")  # a radio group moves with the arrows
    expect(retry).to_be_checked()
    expect(page.get_by_label("compensate what they did")).to_be_hidden()
    count_button = page.get_by_role("button", name="Count instances")
    tab_to(page, count_button)
    page.keyboard.press("Enter")
    expected = len(console.get("/sagas", saga="order", status="compensation_failed")["instances"])
    noun = "instance matches" if expected == 1 else "instances match"
    expect(page.locator(".bulk-count")).to_have_text(f"{expected} {noun}")
    run = page.locator(".bulk-form button.danger")
    tab_to(page, run)
    page.keyboard.press("Enter")
    confirm = page.locator("dialog.confirm-dialog")
    expect(confirm).to_contain_text(f"Retry {expected} instance")
    expect(confirm.get_by_role("button", name="Cancel")).to_be_focused()
    shot("bulk retry confirmation by keyboard")
    page.keyboard.press("Escape")
    expect(confirm).to_have_count(0)
    expect(page.locator(".bulk-job")).to_have_count(0)
    after = len(console.get("/sagas", saga="order", status="compensation_failed")["instances"])
    assert after == expected, "Escape ran the bulk retry"

    # Dead letters by keyboard: search, open the bytes, ask to redrive and cancel.
    open_console_hash(page, "#/deadletters")
    reason = page.locator("#dl-reason")
    tab_to(page, reason)
    page.keyboard.type(mid)
    tab_to(page, page.get_by_role("button", name="Search"))
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{console.base_url}/ui/#/deadletters?reason={mid}")
    expect(page.locator("tr.dl-row")).to_have_count(1)
    summary = page.locator("tr.dl-more summary")
    tab_to(page, summary)
    page.keyboard.press("Enter")
    expect(page.locator("tr.dl-more pre.bytes")).to_be_visible()
    tab_to(page, page.get_by_role("button", name=f"Redrive dead letter {dead['id']}"))
    page.keyboard.press("Enter")
    expect(confirm).to_contain_text(f"Redrive dead letter {dead['id']}?")
    page.keyboard.press("Escape")
    expect(confirm).to_have_count(0)
    assert dead_letters(console, reason=mid)[0]["redriven_at"] is None

    # Definitions by keyboard: a saga's transitions open with Enter.
    open_console_hash(page, "#/definitions/order")
    transitions = page.locator("section.definition details summary")
    tab_to(page, transitions)
    page.keyboard.press("Enter")
    expect(page.locator("table.transitions")).to_be_visible()

    # A narrow window: every page fits; wide tables scroll in their own box.
    page.set_viewport_size(NARROW)
    for hash_, ready in (
        ("#/bulk", page.get_by_role("button", name="Count instances")),
        (f"#/deadletters?reason={mid}", page.locator("tr.dl-row")),
        ("#/definitions", page.locator("figure.diagram[data-drawn=true] svg").last),
    ):
        open_console_hash(page, hash_)
        expect(ready).to_be_visible(timeout=20_000)
        assert fits(page), f"{hash_} is wider than a {NARROW['width']} px window"
        shot(f"narrow {hash_.split('?')[0].strip('#/')}")
    page.get_by_role("link", name="Bulk actions").click()
    page.get_by_role("radio", name="redrive").check()
    expect(page.get_by_role("button", name="Count dead letters")).to_be_visible()
    assert fits(page)
    shot("narrow bulk redrive")
    assert fired == []


def test_a_running_job_shows_its_progress_and_a_cancel_that_says_why_it_failed(
    page: Page, shot: Screenshots, console: ConsoleSidecar
) -> None:
    """A job's page while it runs (its progress as ``GET /bulk/{id}`` reports it, held
    at "running" here by answering that poll from the test: a real job over a few
    instances ends before a screenshot), and its Cancel, which goes to the sidecar: the
    job is over there, so the API's 409 is shown as it says it."""
    with console.client(admin=True) as http:
        started = http.post(
            "/bulk/resume", json={"saga": "order", "correlation_id": f"none-{uuid.uuid4().hex}"}
        )
        assert started.status_code == 202, started.text
        job_id = started.json()["id"]
        console.wait_until(
            "the empty job ends",
            lambda: http.get(f"/bulk/{job_id}").json()["state"] == "done",
            timeout=10.0,
        )
        real = http.get(f"/bulk/{job_id}").json()
    running = real | {"state": "running", "matched": 10, "done": 3, "refused": 1}
    running |= {"errors": ["<b>not bold</b> instance x refused"], "finished_at": None}

    def still_running(route: Route, request: Request) -> None:
        if request.method == "GET":
            route.fulfill(json=running)
        else:
            route.fallback()

    page.route(f"**/bulk/{job_id}", still_running)
    open_console(page, console, f"#/bulk?action=resume&saga=order&job={job_id}")
    job = page.locator(".bulk-job")
    expect(job.locator(".badge")).to_have_text("running")
    expect(job.locator("progress")).to_have_attribute("value", "4")
    expect(job.locator("progress")).to_have_attribute("max", "10")
    expect(job.locator(".bulk-errors li")).to_have_text("<b>not bold</b> instance x refused")
    expect(page.get_by_role("button", name="Count instances")).to_be_disabled()
    shot("bulk job running")

    page.unroute(f"**/bulk/{job_id}", still_running)
    job.get_by_role("button", name="Cancel").click()
    expect(job.locator(".notice.error")).to_have_text(f"bulk action {job_id} is already done")
    expect(job.locator(".badge")).to_have_text("done")  # the next poll: the real job
    expect(job.get_by_role("button", name="Cancel")).to_have_count(0)
    expect(page.get_by_role("button", name="Count instances")).to_be_enabled()
    shot("bulk job cancel refused")
