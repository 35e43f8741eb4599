"""The dashboard's task detail says what a task waits for (README, "Dependencies")."""

from __future__ import annotations

from playwright.async_api import expect

from tests.browser.conftest import Dashboard

#: long enough to be seen running, never long enough to end on its own here
SLOW = {"steps": 600, "interval": 0.05}


async def test_the_detail_shows_what_a_task_waits_for(dashboard: Dashboard) -> None:
    page = dashboard.page
    first = await dashboard.submit("sleep", SLOW, name="first")
    second = await dashboard.submit("echo", {}, name="second", dependencies=str(first))
    await expect(dashboard.row(first).locator(".status")).to_have_text("running")
    await expect(dashboard.row(second).locator(".status")).to_have_text("new")

    await dashboard.row(second).click()
    detail = page.get_by_role("region", name="Task detail")
    await expect(detail.get_by_role("heading", name=f"Task {second}")).to_be_visible()
    waits = detail.locator("#detail-fields dd .dependencies")
    await expect(waits.get_by_role("button", name=str(first), exact=True)).to_be_visible()
    await expect(waits.locator(".dependencies-left")).to_have_text("(1 not succeeded yet)")

    # a click on the dependency opens it; its cancel ends the waiting one too
    await waits.get_by_role("button", name=str(first), exact=True).click()
    await expect(detail.get_by_role("heading", name=f"Task {first}")).to_be_visible()
    await detail.get_by_role("button", name="Cancel", exact=True).click()
    await expect(dashboard.row(second).locator(".status")).to_have_text("cancelled")
    ended = await dashboard.task(second)
    assert ended["task_result"] == f"Cancelled due to dependent task '{first}' cancelled"
    await dashboard.row(second).click()
    await expect(detail.locator("#detail-result")).to_have_text(
        f"Cancelled due to dependent task '{first}' cancelled"
    )
    await expect(waits.locator(".dependencies-left")).to_have_count(0)
