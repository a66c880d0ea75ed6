"""The Overview page in Chromium: per saga, instances by status and state, rates between
two looks, stuck instances and dead letters as numbers linking to their lists, recent
deviations; and its numbers agree with the API's."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.console.browser import Screenshots
from tests.console.rig import ConsoleSidecar
from tests.console.test_operations import open_console


def test_the_overview_counts_each_saga_and_links_to_its_lists(
    page: Page, shot: Screenshots, console: ConsoleSidecar
) -> None:
    open_console(page, console, "#/overview")
    card = page.get_by_role("region", name="saga order")
    expect(card).to_be_visible()
    overview = console.get("/overview")
    [order] = [s for s in overview["sagas"] if s["name"] == "order"]
    for status, n in order["instances"].items():
        number = card.locator(".number", has=page.locator(f"span:text-is('{status}')"))
        expect(number.locator("b")).to_have_text(str(n))
    expect(page.get_by_role("region", name="saga checkout")).to_be_visible()
    expect(page.locator("h2", has_text="Recent deviations")).to_be_visible()
    shot("overview")

    # the rates appear after the second look (5 s later): a number, not "-"
    started = card.locator(".number", has=page.locator("span:text-is('started/min')")).locator("b")
    expect(started).not_to_have_text("-", timeout=12_000)
    shot("overview-with-rates")

    # a count is a link to its list
    card.locator(".number", has=page.locator("span:text-is('completed')")).locator("a").click()
    expect(page).to_have_url(re.compile(r"#/instances\?.*status=completed"))
    expect(page.locator("main .page-instances")).to_be_visible()
    shot("instances-from-overview")
    page.go_back()
    stuck = card.locator(".number", has=page.locator("span:text-is('stuck')"))
    stuck.locator("a").click()
    expect(page).to_have_url(re.compile(r"#/instances\?.*stuck=true"))
    shot("stuck-from-overview")
