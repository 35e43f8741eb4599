"""The dashboard's job types panel (README, "Pausing a job type"): each type, paused (since
when) or running; Pause (after a confirmation) and Resume act on the whole service, and a
pause made through the API shows up without a reload."""

from __future__ import annotations

from playwright.async_api import expect

from tests.browser.conftest import Dashboard


async def test_the_types_panel_pauses_and_resumes_a_type(dashboard: Dashboard) -> None:
    page = dashboard.page
    panel = page.get_by_role("region", name="Job types")
    sleep = panel.locator('li[data-type="sleep"]')
    await expect(sleep).to_have_attribute("data-paused", "false")
    page.once("dialog", lambda dialog: dialog.accept())
    await sleep.get_by_role("button", name="Pause").click()
    await expect(sleep).to_have_attribute("data-paused", "true")
    await expect(sleep.locator(".badge")).to_contain_text("paused since")
    await expect(panel.locator("#type-message")).to_have_text("Job type sleep paused.")
    async with dashboard.http.get(f"{dashboard.url}/types") as response:
        assert set((await response.json())["paused"]) == {"sleep"}
    # a task of it waits; another type's runs
    waiting = await dashboard.submit("sleep", {"steps": 1, "interval": 0})
    done = await dashboard.submit("echo", {})
    await expect(dashboard.row(done).locator(".status")).to_have_text("success")
    assert (await dashboard.task(waiting))["task_status"] == "new"
    await dashboard.screenshot("dashboard-paused-type.png")
    await sleep.get_by_role("button", name="Resume").click()
    await expect(sleep).to_have_attribute("data-paused", "false")
    await expect(dashboard.row(waiting).locator(".status")).to_have_text("success")
    # paused through the API: the panel shows it at its next read
    async with dashboard.http.put(f"{dashboard.url}/types/echo", params={"action": "pause"}) as r:
        assert r.status == 200
    await expect(panel.locator('li[data-type="echo"]')).to_have_attribute("data-paused", "true")
