"""The dashboard's schedules panel (README, "Schedules"): a schedule's next fire time, its
tasks as they come (linked back in the task detail), pause, resume, delete, a new one from
the form; and a task submitted with a run time shows when it is due."""

from __future__ import annotations

from playwright.async_api import expect

from tests.browser.conftest import Dashboard


async def test_the_schedules_panel_shows_fires_and_acts(dashboard: Dashboard) -> None:
    page = dashboard.page
    panel = page.get_by_role("region", name="Schedules")
    await expect(panel.locator("#schedules-empty")).to_be_visible()
    # a schedule made from the form, every second
    await panel.locator("summary").click()
    await panel.get_by_label("Name").fill("tick")
    await panel.get_by_label("Cron or seconds").fill("1")
    await panel.get_by_label("Schedule input (JSON)").fill('{"n": 1}')
    await panel.get_by_role("button", name="Add schedule").click()
    item = panel.locator('li[data-schedule="tick"]')
    await expect(item.locator(".schedule-when")).to_have_text("every 1 s")
    await expect(item.locator(".schedule-next .due")).to_contain_text("due")
    # its tasks come, and the panel follows them (last task)
    await expect(item.locator(".schedule-last")).to_contain_text("last task")
    row = page.locator("#tasks tbody tr").filter(has_text="tick").first
    await row.click()
    detail = page.get_by_role("region", name="Task detail")
    await expect(detail.locator("#detail-fields")).to_contain_text("tick, fire time")
    # paused: it says so and fires no more; resumed: a next fire time again
    await item.get_by_role("button", name="Pause").click()
    await expect(item).to_have_attribute("data-paused", "true")
    await expect(item.locator(".schedule-next")).to_have_text("next: paused")
    await item.get_by_role("button", name="Resume").click()
    await expect(item).to_have_attribute("data-paused", "false")
    await expect(item.locator(".schedule-next .due")).to_be_visible()
    # a bad one is refused with the server's message
    await panel.get_by_label("Name").fill("bad")
    await panel.get_by_label("Cron or seconds").fill("every day")
    await panel.get_by_role("button", name="Add schedule").click()
    await expect(panel.locator("#schedule-message")).to_contain_text("is not a cron expression")
    # deleted, after a confirmation
    page.once("dialog", lambda dialog: dialog.accept())
    await item.get_by_role("button", name="Delete").click()
    await expect(item).to_have_count(0)
    await dashboard.screenshot("dashboard-schedules.png")


async def test_a_task_submitted_with_a_run_time_shows_when_it_is_due(
    dashboard: Dashboard,
) -> None:
    page = dashboard.page
    form = page.get_by_role("region", name="Submit a job")
    await form.get_by_label("Job type").select_option("echo")
    await form.get_by_label("Run at (local time)").fill("2030-01-01T09:00:00")
    await form.get_by_role("button", name="Submit").click()
    await expect(form.locator("#submit-message")).to_contain_text("submitted")
    detail = page.get_by_role("region", name="Task detail")
    await expect(detail.locator("#detail-fields")).to_contain_text("2030-01-01 09:00:00")
