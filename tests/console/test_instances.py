"""The console's Instances list and One-instance pages, in Chromium against the fixture's
sidecar: search by filter (the search is a link), page through results, open an order's
timeline and drawn diagram, abort, retry, see why an action is unavailable, hostile
correlation ids and reasons shown as text, a narrow window, and the keyboard.

Each test places the orders it acts on (``place_waiting_orders``: running, soon stuck,
for the whole session) rather than acting on the preloaded ones, which other test
modules count and act on too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from playwright.sync_api import ConsoleMessage, Dialog, Page, expect

from tests.console.browser import Screenshots
from tests.console.rig import ConsoleSidecar
from tests.console.sagas_console import STUCK_AFTER

HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>/x y"
"""The start of an order id a shop should never send: markup, a "/" (the API's path-typed
id) and a space."""
DRAWN_MS = 30_000
"""Mermaid (3.5 MB) is parsed afresh in each test's new context, on a busy machine."""


def open_console(page: Page, console: ConsoleSidecar, hash_: str, token: str) -> None:
    """The console at ``hash_`` with ``token`` already given for this tab, as after the
    operator typed it once (the token prompt itself is driven in the abort test)."""
    page.goto(f"{console.base_url}/healthz")
    page.evaluate("t => sessionStorage.setItem('sagawire.token', t)", token)
    page.goto(f"{console.base_url}/ui/{hash_}")


def uri_component(text: str) -> str:
    """``text`` as JavaScript's encodeURIComponent writes it (app.js's ``link``)."""
    return quote(text, safe="!*'()")


def hash_of(page: Page) -> str:
    return str(page.evaluate("window.location.hash"))


def waiting_order(console: ConsoleSidecar, *, stuck: bool = False) -> str:
    """A new order, running in ``shipping`` (its shipping command unanswered); ``stuck``:
    once past the step's SLO."""
    [oid] = console.place_waiting_orders(1, prefix="inst")

    def there() -> bool:
        page = console.get("/sagas", saga="order", correlation_id=oid, stuck=str(stuck).lower())
        return any(i["state"] == "shipping" for i in page["instances"])

    console.wait_until(f"{oid} waits at shipping", there, timeout=STUCK_AFTER + 20)
    return oid


@pytest.fixture
def csp_reports(page: Page) -> list[str]:
    """Console messages about the Content-Security-Policy (a refused script, eval or
    style): the console must draw everything within its policy."""
    found: list[str] = []

    def seen(msg: ConsoleMessage) -> None:
        if "Content Security Policy" in msg.text or "Refused to" in msg.text:
            found.append(f"{msg.type}: {msg.text}")

    page.on("console", seen)
    return found


@pytest.fixture
def dialogs(page: Page) -> Iterator[list[str]]:
    """Native dialogs (alert, confirm) the page opened: the console uses none, so one
    means a payload ran. Dismissed so the page goes on."""
    opened: list[str] = []

    def seen(dialog: Dialog) -> None:
        opened.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", seen)
    yield opened
    assert opened == [], f"the page opened native dialogs: {opened}"


def rows(page: Page) -> list[str]:
    """The correlation ids of the results table, in order."""
    return page.locator("table.instances tbody tr td:first-child").all_inner_texts()


def keys(page: Page) -> set[tuple[str, str]]:
    """The (saga, correlation id) of each result: an order and its checkout share an id."""
    cells = page.locator("table.instances tbody tr td:nth-child(-n+2)").all_inner_texts()
    return set(zip(cells[1::2], cells[0::2], strict=True))


def test_find_a_compensated_order_by_search_and_open_its_timeline_and_diagram(
    page: Page, shot: Screenshots, console: ConsoleSidecar, csp_reports: list[str]
) -> None:
    open_console(page, console, "#/instances", console.read_token)
    state = page.get_by_label("state")
    expect(state).to_be_disabled()  # states belong to one saga: none chosen yet
    page.get_by_label("saga").select_option("order")
    expect(state).to_be_enabled()
    order = next(d for d in console.get("/definitions") if d["name"] == "order")
    assert state.locator("option").all_inner_texts() == ["any state", *order["states"]]
    page.get_by_label("status").select_option("compensated")
    page.get_by_role("button", name="Search").click()

    page.wait_for_function("location.hash.includes('status=compensated')")
    assert hash_of(page) == "#/instances?saga=order&status=compensated"
    # the new results replace the unfiltered ones once they are in
    expect(page.locator("table.instances .badge:not(.status-compensated)")).to_have_count(0)
    expect(page.locator("table.instances tbody tr").first).to_be_visible()
    badges = page.locator("table.instances tbody tr td:nth-child(4) .badge").all_inner_texts()
    assert badges and set(badges) == {"compensated"}
    assert set(page.locator("table.instances tbody td:nth-child(2)").all_inner_texts()) == {"order"}
    expected = console.get("/sagas", saga="order", status="compensated", limit=50)
    assert rows(page) == [i["correlation_id"] for i in expected["instances"]]
    first_row = page.locator("table.instances tbody tr").first
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ",
        first_row.locator("td").nth(4).get_attribute("title") or "",
    )
    expect(first_row.locator("td").nth(4)).to_have_text(re.compile(r"\d+ (s|min|h|d) ago"))
    shot("instances-compensated")

    # The search is a link: reloading it shows the same, the form filled in.
    page.reload()
    expect(page.get_by_label("status")).to_have_value("compensated")
    expect(page.get_by_label("saga")).to_have_value("order")
    assert rows(page) == [i["correlation_id"] for i in expected["instances"]]

    oid = rows(page)[0]
    page.get_by_role("link", name=oid, exact=True).click()
    detail = console.get(f"/sagas/order/{oid}")
    assert hash_of(page) == f"#/instance/order/{oid}"
    expect(page.locator("h1.instance-title")).to_contain_text(oid)
    expect(page.locator("h1.instance-title .badge")).to_have_text("compensated")
    facts = page.locator("dl.facts")
    expect(facts).to_contain_text(detail["definition_version"])
    expect(facts).to_contain_text(detail["failure"])
    entries = page.locator("ol.timeline > li")
    expect(entries).to_have_count(len(detail["history"]))
    expect(entries.first).to_contain_text("order.placed")
    expect(entries.first).to_contain_text(f"{oid}/placed")  # its message id
    expect(entries.first).to_contain_text("initial -> inventory")
    command = detail["history"][0]["commands"][0]
    ctype, _, cid = command.partition(":")
    expect(entries.first.locator("li.kind-command")).to_contain_text(ctype)
    expect(entries.first.locator("li.kind-command")).to_contain_text(cid)
    expect(entries.last).to_contain_text(f"-> {detail['state']}")

    drawn = page.locator('figure.diagram[data-drawn="true"]')
    expect(drawn.locator("svg")).to_have_count(1, timeout=DRAWN_MS)
    expect(drawn.locator("svg .current")).to_contain_text("compensated")
    expect(page.locator("pre.json").first).to_contain_text(f'"order_id": "{oid}"')
    timeline_box = page.locator("section[aria-label=timeline]").bounding_box()
    diagram_box = page.locator("section[aria-label=diagram]").bounding_box()
    assert (
        timeline_box and diagram_box and diagram_box["x"] > timeline_box["x"] + 200
    )  # side by side
    shot("instance-compensated")

    fitted = drawn.locator("svg").bounding_box()
    page.get_by_role("button", name="Actual size").click()
    expect(page.get_by_role("button", name="Fit to column")).to_have_attribute(
        "aria-pressed", "true"
    )
    actual = drawn.locator("svg").bounding_box()
    assert fitted and actual and actual["width"] > fitted["width"] * 1.5
    shot("instance-diagram-actual-size")
    page.get_by_role("button", name="Refresh").click()
    expect(entries).to_have_count(len(detail["history"]))
    assert csp_reports == []


def test_pages_of_results_an_empty_search_and_stuck_rows_highlighted(
    page: Page, shot: Screenshots, console: ConsoleSidecar
) -> None:
    stuck = waiting_order(console, stuck=True)
    open_console(page, console, "#/instances?limit=25", console.read_token)
    expect(page.locator("table.instances tbody tr")).to_have_count(25)
    first = keys(page)
    assert len(first) == 25
    page.get_by_role("link", name="Next page").click()
    page.wait_for_function("location.hash.includes('cursor=')")
    expect(page.get_by_role("link", name="First page")).to_be_visible()
    expect(page.locator("table.instances tbody tr").first).to_be_visible()
    second = keys(page)
    assert second and not first & second
    shot("instances-page-2")
    page.get_by_role("link", name="First page").click()
    page.wait_for_function("!location.hash.includes('cursor=')")
    expect(page.get_by_role("link", name="First page")).to_have_count(0)  # page 1 drawn
    expect(page.locator("table.instances tbody tr")).to_have_count(25)

    page.get_by_label("correlation id").fill("no-such-order")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_text("No instances match this search.")).to_be_visible()
    expect(page.locator("table.instances")).to_have_count(0)
    shot("instances-empty")

    page.get_by_label("correlation id").fill(stuck)
    page.get_by_label("stuck only").check()
    page.get_by_label("updated in the last (number)").fill("2")
    page.get_by_label("unit").select_option("h")
    page.get_by_role("button", name="Search").click()
    page.wait_for_function("location.hash.includes('stuck=true')")
    assert "last=2h" in hash_of(page)
    row = page.locator("table.instances tbody tr")
    expect(row).to_have_count(1)  # the order (the checkout it started has no SLO)
    expect(row).to_have_class("stuck")
    expect(row.locator("td").nth(1)).to_have_text("order")
    expect(row.locator(".badge.stuck")).to_have_text("running, stuck")
    shot("instances-stuck")

    # A bad filter is the API's error beside the form, not a broken page.
    open_console(page, console, "#/instances?updated_before=yesterday", console.read_token)
    expect(page.locator("p.notice.error")).to_contain_text("updated_before")
    expect(page.get_by_role("button", name="Search")).to_be_visible()
    shot("instances-bad-filter")


def test_abort_a_running_order_with_a_reason_asks_for_the_admin_token(
    page: Page, shot: Screenshots, console: ConsoleSidecar, dialogs: list[str]
) -> None:
    oid = waiting_order(console)
    reason = "customer called <img src=x onerror=alert(3)> to cancel"
    open_console(page, console, f"#/instance/order/{oid}", console.read_token)
    expect(page.locator("h1.instance-title")).to_contain_text("shipping")
    expect(page.locator("ol.timeline li.kind-operator")).to_have_count(0)
    page.get_by_label("Reason").fill(reason)
    expect(page.get_by_label(re.compile("compensate on abort"))).to_be_checked()
    page.get_by_role("button", name="Abort").click()

    confirm = page.locator("dialog.confirm-dialog")
    expect(confirm).to_contain_text(f"Abort order instance {oid}?")
    expect(confirm).to_contain_text(f"Reason: {reason}")
    shot("instance-confirm-abort")
    confirm.get_by_role("button", name="Abort").click()

    # The read token may not act: the console asks for the admin one, then goes on.
    token = page.locator("dialog.token-dialog")
    expect(token).to_contain_text("admin token")
    token.get_by_label("Token").fill(console.admin_token)
    shot("instance-token-prompt")
    token.get_by_role("button", name="Use token").click()

    result = page.locator(".action-result")
    # the API's answer: the instance as it stood once the abort was applied (the refund
    # may be answered already by the time it is read back)
    expect(result).to_have_text(
        re.compile(r"Abort done: state (compensating:\w+|compensated|compensation_failed), status ")
    )
    operator = page.locator("ol.timeline li.kind-operator")
    expect(operator).to_have_count(1)
    expect(operator).to_contain_text(f"operator abort by admin: {reason}")
    expect(operator).to_contain_text("shipping -> compensating:payment")
    expect(operator.locator("li.kind-command")).to_contain_text("payment.refund")
    expect(page.locator("main img")).to_have_count(0)
    # Compensating now (running), compensated or compensation_failed once the services
    # answer: the header shows it, and the page refreshes itself until it ends.
    expect(page.locator("h1.instance-title")).not_to_contain_text("shipping")
    expect(page.locator("h1.instance-title")).to_contain_text(
        re.compile(r"compensating:(payment|inventory)|compensated|compensation_failed")
    )
    after = console.get(f"/sagas/order/{oid}")
    assert after["state"] != "shipping"
    assert [h["note"] for h in after["history"] if h["kind"] == "operator"] == [
        f"operator abort by admin: {reason}"
    ]
    shot("instance-aborted")
    console.wait_until(
        f"{oid} ends its compensation",
        lambda: console.get(f"/sagas/order/{oid}")["status"] != "running",
        timeout=30,
    )
    ended = console.get(f"/sagas/order/{oid}")
    expect(page.locator("h1.instance-title .badge")).to_have_text(ended["status"], timeout=15_000)
    expect(page.get_by_role("button", name="Abort")).to_be_disabled()
    shot("instance-compensation-ended")


def test_retry_a_running_order_sends_its_command_again(
    page: Page, shot: Screenshots, console: ConsoleSidecar
) -> None:
    oid = waiting_order(console)
    open_console(page, console, f"#/instance/order/{oid}", console.admin_token)
    commands = page.locator("ol.timeline li.kind-command", has_text="shipping.schedule")
    expect(commands).to_have_count(1)
    retry = page.get_by_role("button", name="Retry")

    # Cancelled at the confirmation: nothing happens, the focus is back on the button.
    retry.click()
    page.locator("dialog.confirm-dialog").get_by_role("button", name="Cancel").click()
    expect(page.locator("dialog.confirm-dialog")).to_have_count(0)
    expect(retry).to_be_focused()
    assert all(h["kind"] != "operator" for h in console.get(f"/sagas/order/{oid}")["history"])

    page.get_by_label("Reason").fill("carrier API back up")
    retry.click()
    page.locator("dialog.confirm-dialog").get_by_role("button", name="Retry").click()
    expect(page.locator(".action-result")).to_contain_text(
        "Retry done: state shipping, status running"
    )
    operator = page.locator("ol.timeline li.kind-operator")
    expect(operator).to_contain_text("operator retry by admin: carrier API back up")
    expect(operator.locator("li.kind-command")).to_contain_text("shipping.schedule")
    expect(commands).to_have_count(2)  # the shipping command, sent again
    expect(page.get_by_label("Reason")).to_have_value("")
    shot("instance-retried")
    # (the simulated shipping service may answer this second attempt: the order then
    # goes on, which the page shows by itself within a refresh or two)


def test_actions_a_status_does_not_allow_are_disabled_with_the_reason(
    page: Page, shot: Screenshots, console: ConsoleSidecar
) -> None:
    done = console.get("/sagas", saga="order", status="completed", limit=1)["instances"][0]
    open_console(page, console, f"#/instance/order/{done['correlation_id']}", console.admin_token)
    resume = page.get_by_role("button", name="Resume")
    expect(resume).to_be_disabled()
    expect(page.locator("#why-resume")).to_have_text(
        "Resume needs a compensation_failed instance; this one is completed."
    )
    expect(page.locator("#why-resume")).to_be_visible()
    expect(resume).to_have_attribute("aria-describedby", "why-resume")
    for name in ("Abort", "Retry"):
        expect(page.get_by_role("button", name=name)).to_be_disabled()
    expect(page.locator("#why-abort")).to_have_text(
        "Abort needs a running instance; this one is completed."
    )
    shot("instance-completed")

    failed = console.get("/sagas", saga="order", status="compensation_failed", limit=1)
    cid = failed["instances"][0]["correlation_id"]
    open_console(page, console, f"#/instance/order/{cid}", console.admin_token)
    expect(page.get_by_role("button", name="Resume")).to_be_enabled()
    expect(page.get_by_role("button", name="Abort")).to_be_disabled()
    expect(page.locator("#why-resume")).to_contain_text("try the failed compensation again")
    shot("instance-compensation-failed")


def test_a_correlation_id_with_markup_is_shown_as_text(
    page: Page, shot: Screenshots, console: ConsoleSidecar, dialogs: list[str]
) -> None:
    # An order that waits at shipping, so that it never becomes "the newest completed
    # order", which other modules pick expecting a plain id.
    [hostile] = console.place_waiting_orders(1, prefix=HOSTILE)
    assert hostile.startswith(HOSTILE)
    console.wait_until(
        "the hostile order is stored",
        lambda: bool(console.get("/sagas", saga="order", correlation_id=hostile)["instances"]),
        timeout=20,
    )
    open_console(page, console, "#/instances", console.read_token)
    page.get_by_label("correlation id").fill(hostile)
    page.get_by_label("saga").select_option("order")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("table.instances tbody tr")).to_have_count(1)  # the order only
    link = page.get_by_role("link", name=hostile, exact=True)
    expect(link).to_be_visible()
    assert f"correlation_id={quote(hostile, safe='')}".replace("%20", "+") in hash_of(page)
    shot("instances-hostile")
    link.click()
    expect(page.locator("h1.instance-title .cid")).to_have_text(hostile)
    expect(page.locator("dl.facts")).to_contain_text(hostile)
    expect(page.locator("ol.timeline > li").first).to_contain_text(f"{hostile}/placed")
    expect(page.locator("pre.json").first).to_contain_text(hostile)
    assert page.locator("main img, main script").count() == 0
    assert hash_of(page) == f"#/instance/order/{uri_component(hostile)}"
    shot("instance-hostile")


def test_both_pages_at_a_narrow_window(
    page: Page, shot: Screenshots, console: ConsoleSidecar
) -> None:
    oid = waiting_order(console)
    page.set_viewport_size({"width": 420, "height": 800})
    open_console(page, console, "#/instances?saga=order&status=running", console.read_token)
    expect(page.locator("table.instances tbody tr").first).to_be_visible()
    no_sideways_scroll = "document.documentElement.scrollWidth <= window.innerWidth"
    assert page.evaluate(no_sideways_scroll)
    shot("instances-narrow")

    page.get_by_role("link", name=oid, exact=True).click()
    expect(page.locator('figure.diagram[data-drawn="true"] svg')).to_have_count(1, timeout=DRAWN_MS)
    assert page.evaluate(no_sideways_scroll)
    timeline = page.locator("section[aria-label=timeline]").bounding_box()
    drawing = page.locator("section[aria-label=diagram]").bounding_box()
    assert timeline and drawing
    assert drawing["y"] >= timeline["y"] + timeline["height"]  # stacked, not squeezed
    assert drawing["width"] <= 420
    page.get_by_role("button", name="Abort").scroll_into_view_if_needed()
    expect(page.get_by_role("button", name="Abort")).to_be_visible()
    shot("instance-narrow")


def test_keyboard_tab_to_abort_and_press_enter(
    page: Page, shot: Screenshots, console: ConsoleSidecar
) -> None:
    oid = waiting_order(console)
    open_console(page, console, f"#/instance/order/{oid}", console.admin_token)
    reason = page.get_by_label("Reason")
    reason.focus()
    page.keyboard.type("stopped from the keyboard")
    page.keyboard.press("Tab")  # the "compensate" checkbox
    expect(page.get_by_label(re.compile("compensate on abort"))).to_be_focused()
    page.keyboard.press("Tab")
    abort = page.get_by_role("button", name="Abort")
    expect(abort).to_be_focused()
    page.keyboard.press("Enter")
    confirm = page.locator("dialog.confirm-dialog")
    expect(confirm.get_by_role("button", name="Cancel")).to_be_focused()  # no surprise
    page.keyboard.press("Shift+Tab")
    expect(confirm.get_by_role("button", name="Abort")).to_be_focused()
    shot("instance-keyboard-confirm")
    page.keyboard.press("Enter")
    expect(page.locator(".action-result")).to_contain_text("Abort done")
    expect(page.locator("ol.timeline li.kind-operator")).to_contain_text(
        "operator abort by admin: stopped from the keyboard"
    )
    shot("instance-keyboard-aborted")


def test_an_action_the_instance_no_longer_allows_shows_the_apis_409(
    page: Page, shot: Screenshots, console: ConsoleSidecar
) -> None:
    """Another operator stops the order while this one is confirming a retry: the API
    refuses it (409) and the page says why, in the API's words, then shows the order as
    it is now."""
    oid = waiting_order(console)
    open_console(page, console, f"#/instance/order/{oid}", console.admin_token)
    page.get_by_role("button", name="Retry").click()
    confirm = page.locator("dialog.confirm-dialog")
    expect(confirm).to_be_visible()
    with console.client(admin=True) as http:
        r = http.post(
            f"/sagas/order/{oid}/abort",
            params={"compensate": "false"},
            json={"reason": "meanwhile"},
        )
        assert r.status_code == 200 and r.json()["status"] == "aborted", r.text
    confirm.get_by_role("button", name="Retry").click()
    refused = page.locator(".action-result .notice.error")
    expect(refused).to_have_text(f"Retry refused: 'order' instance '{oid}' is already aborted")
    expect(page.locator("h1.instance-title .badge")).to_have_text("aborted")
    expect(page.locator("#why-retry")).to_have_text(
        "Retry needs a running instance; this one is aborted."
    )
    expect(page.locator("ol.timeline li.kind-operator")).to_contain_text(
        "operator abort by admin: meanwhile"
    )
    shot("instance-retry-refused")
