"""The dashboard's name and time filters, read by the server, and its bulk action on
every task they match, after a confirmation that says how many: in a real browser."""

from __future__ import annotations

import time
from datetime import datetime

from playwright.async_api import Dialog, expect

from tests.browser.conftest import Dashboard
from tests.conftest import wait_for

LATER = 3600


async def _after_second(ms: int) -> bool:
    return time.time() >= ms // 1000 + 1


def local(ms: int) -> str:
    """A datetime-local input's value for epoch ms (the browser's zone is the machine's)."""
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%dT%H:%M:%S")


async def test_filters_by_name_and_time_and_a_confirmed_bulk_cancel(dashboard: Dashboard) -> None:
    page = dashboard.page
    nightly = []
    for n in range(3):
        nightly.append(await dashboard.submit("echo", {}, name=f"nightly {n}", delay=LATER))
        # each in a second of its own: a datetime-local input holds whole seconds
        created = (await dashboard.task(nightly[-1]))["task_create"]
        await wait_for(lambda c=created: _after_second(c), what="the next second")
    other = await dashboard.submit("echo", {}, name="other", delay=LATER)
    ids = page.locator("#tasks tbody tr td.num:first-child")
    await expect(ids).to_have_text([str(i) for i in reversed([*nightly, other])])

    # a name prefix: the server filters (one read with name=), the rows are its answer
    asked = len(dashboard.requests)
    await page.get_by_label("Filter by name prefix").fill("nightly")
    await expect(ids).to_have_text([str(i) for i in reversed(nightly)])
    lists = [u for u in dashboard.requests[asked:] if "/tasks?" in u]
    assert lists and all("name=nightly" in u for u in lists), lists

    # a creation range: from the second nightly task on
    second = await dashboard.task(nightly[1])
    asked = len(dashboard.requests)
    await page.get_by_label("Created from (local time)").fill(
        local(second["task_create"] // 1000 * 1000)
    )
    await expect(ids).to_have_text([str(nightly[2]), str(nightly[1])])
    lists = [u for u in dashboard.requests[asked:] if "/tasks?" in u]
    assert lists and all("created_from=" in u for u in lists), lists
    await page.get_by_label("Created from (local time)").fill("")
    await expect(ids).to_have_text([str(i) for i in reversed(nightly)])

    # a new task that matches comes in live; one that does not stays out
    late = await dashboard.submit("echo", {}, name="nightly late", delay=LATER)
    ignored = await dashboard.submit("echo", {}, name="daily", delay=LATER)
    await expect(ids).to_have_text([str(late), *(str(i) for i in reversed(nightly))])
    assert await dashboard.row(ignored).count() == 0

    # the bulk cancel asks first, with the count; said no, nothing changes
    questions: list[str] = []

    async def answer(dialog: Dialog, accept: bool) -> None:
        questions.append(dialog.message)
        await (dialog.accept() if accept else dialog.dismiss())

    bulk = page.get_by_role("group", name="Bulk actions")
    await bulk.get_by_label("Bulk action").select_option("cancel")
    page.once("dialog", lambda d: answer(d, False))
    await bulk.get_by_role("button", name="Apply…").click()

    async def asked() -> bool:
        return bool(questions)

    await wait_for(asked, what="the question")
    assert questions == ["Cancel 4 tasks matching the filters?"]
    assert {(await dashboard.task(i))["task_status"] for i in [*nightly, late]} == {"new"}

    page.once("dialog", lambda d: answer(d, True))
    await bulk.get_by_role("button", name="Apply…").click()
    await expect(bulk.get_by_role("status")).to_have_text("4 of 4 matching tasks changed (cancel).")
    await expect(page.locator("#tasks tbody tr .status")).to_have_text(["cancelled"] * 4)
    for task_id in [*nightly, late]:
        assert (await dashboard.task(task_id))["task_status"] == "cancelled"
    for task_id in (other, ignored):
        assert (await dashboard.task(task_id))["task_status"] == "new"

    # again: each is refused now, and the answer says why
    page.once("dialog", lambda d: answer(d, True))
    await bulk.get_by_role("button", name="Apply…").click()
    await expect(bulk.get_by_role("status")).to_have_text(
        "0 of 4 matching tasks changed (cancel). "
        "4 refused: Can't cancel task which is completed or cancelling"
    )
