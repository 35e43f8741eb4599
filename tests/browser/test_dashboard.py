"""The dashboard in a real browser: what a person sees and does on /ui."""

from __future__ import annotations

import re

from playwright.async_api import expect

from tests.browser.conftest import Dashboard
from tests.conftest import wait_for

#: long enough to be seen running and cancelled, never long enough to end on its own here
SLOW = {"steps": 600, "interval": 0.05}


async def test_a_task_shows_live_and_a_click_cancels_it(dashboard: Dashboard) -> None:
    page = dashboard.page
    assert page.url == f"{dashboard.url}/ui"  # `/` led here
    done = await dashboard.submit("echo", {"hello": "world"}, name="say hello")
    broken = await dashboard.submit("fail", {"message": "the disk is on fire"})
    waiting = await dashboard.submit("echo", {}, delay=3600, name="later")
    task_id = await dashboard.submit("sleep", SLOW, name="slow reindex")

    # the rows arrive over the event stream, each with its status
    for other, status in ((done, "success"), (broken, "failed"), (waiting, "new")):
        await expect(dashboard.row(other).locator(".status")).to_have_text(status)
    row = dashboard.row(task_id)
    await expect(row.locator(".name")).to_have_text("slow reindex")
    await expect(row.locator(".type")).to_have_text("sleep")
    await expect(row.locator(".status")).to_have_text("running")

    # its progress bar moves on its own: every step reported is shown
    bar = row.get_by_role("progressbar")
    await expect(bar).to_have_attribute("aria-valuemax", "600")
    await expect(bar).to_have_attribute("aria-valuenow", re.compile(r"^[1-9][0-9]*$"))
    seen = int(await bar.get_attribute("aria-valuenow") or 0)
    await expect(bar).not_to_have_attribute("aria-valuenow", str(seen))
    assert int(await bar.get_attribute("aria-valuenow") or 0) > seen

    # the counters at the top
    counts = page.get_by_role("navigation", name="Tasks per status")
    await expect(counts.locator('[data-status="running"] .n')).to_have_text("1")
    await expect(counts.locator('[data-status="failed"] .n')).to_have_text("1")

    # its detail, then cancel
    await row.click()
    detail = page.get_by_role("region", name="Task detail")
    await expect(detail.get_by_role("heading", name=f"Task {task_id}")).to_be_visible()
    await expect(detail.locator("#detail-input")).to_have_text(
        '{\n  "steps": 600,\n  "interval": 0.05\n}'
    )
    await detail.get_by_role("button", name="Cancel", exact=True).click()
    await expect(row.locator(".status")).to_have_text("cancelled")
    assert (await dashboard.task(task_id))["task_status"] == "cancelled"
    await expect(counts.locator('[data-status="cancelled"] .n')).to_have_text("1")
    await expect(counts.locator('[data-status="running"] .n')).to_have_text("0")

    # the timeline: every status it went through, from its stored events
    await expect(detail.locator("#timeline li .status")).to_have_text(
        ["new", "scheduling", "scheduled", "queued", "running", "cancelling", "cancelled"]
    )
    # the failed task's detail shows the error it ended with
    await dashboard.row(broken).click()
    await expect(detail.locator("#detail-result")).to_contain_text("the disk is on fire")
    await dashboard.row(task_id).click()
    await expect(detail.locator("#timeline li")).to_have_count(7)

    path = await dashboard.screenshot("dashboard.png")
    assert path.stat().st_size > 0


async def test_a_job_from_the_form_runs_and_a_refused_action_says_why(dashboard: Dashboard) -> None:
    page = dashboard.page
    form = page.get_by_role("region", name="Submit a job")
    await form.get_by_label("Job type").select_option("echo")
    await form.get_by_label("Input (JSON)").fill('{"greeting": "hello", "n": [1, 2]}')
    await form.get_by_label("Name").fill("from the form")
    await form.get_by_role("button", name="Submit").click()

    message = form.get_by_role("status")
    await expect(message).to_have_text(re.compile(r"^Task \d+ submitted\.$"))
    task_id = int(re.findall(r"\d+", await message.inner_text())[0])
    stored = await dashboard.task(task_id)
    assert stored["task_type"] == "echo" and stored["task_name"] == "from the form"

    row = dashboard.row(task_id)
    await expect(row.locator(".status")).to_have_text("success")
    await expect(row.locator(".name")).to_have_text("from the form")
    # the new task opens in the detail: its result, pretty-printed
    detail = page.get_by_role("region", name="Task detail")
    await expect(detail.locator("#detail-result")).to_have_text(
        '{\n  "greeting": "hello",\n  "n": [\n    1,\n    2\n  ]\n}'
    )

    # an action the task's status does not allow: the server's message is shown
    await detail.get_by_role("button", name="Resume").click()
    await expect(detail.get_by_role("alert")).to_have_text(
        f"Can't resume task '{task_id}' in status SUCCESS, only a pending task can be resumed"
    )
    # a submission the server refuses, likewise
    await form.get_by_label("Delay (s)").fill("-1")
    await form.get_by_role("button", name="Submit").click()
    await expect(message).to_have_text("The parameter 'delay' must be >= 0, but got '-1'")
    # and an input that is not JSON never leaves the page
    await form.get_by_label("Delay (s)").fill("")
    await form.get_by_label("Input (JSON)").fill("{not json")
    await form.get_by_role("button", name="Submit").click()
    await expect(message).to_contain_text("The input is not valid JSON")

    # delete: the record goes, and its row with it
    await detail.get_by_role("button", name="Delete").click()
    await expect(detail.get_by_role("alert")).to_have_text(f"Task {task_id} deleted.")
    await expect(row).to_have_count(0)
    async with dashboard.http.get(dashboard.api(f"/tasks/{task_id}")) as response:
        assert response.status == 404


async def test_filters_pages_and_graphs(dashboard: Dashboard) -> None:
    page = dashboard.page
    echoes = [await dashboard.submit("echo", {"n": n}) for n in range(10)]
    fails = [await dashboard.submit("fail", {"message": f"no {n}"}) for n in range(3)]
    elsewhere = await dashboard.submit("echo", {"x": 1}, graph="/graphspaces/gs1/graphs/other")

    async def all_done() -> bool:
        statuses = [(await dashboard.task(i))["task_status"] for i in echoes + fails]
        return statuses == ["success"] * 10 + ["failed"] * 3

    await wait_for(all_done, what="the tasks to finish")
    rows = page.locator("#tasks tbody tr")
    ids = rows.locator("td.num:first-child")
    counts = page.get_by_role("navigation", name="Tasks per status")
    await expect(counts.locator('[data-status="success"] .n')).to_have_text("10")
    await expect(counts.locator('[data-status="failed"] .n')).to_have_text("3")

    # ten to a page, in id order, as the API lists them
    await page.get_by_label("Tasks per page").select_option("10")
    await expect(ids).to_have_text([str(i) for i in echoes])
    await page.get_by_role("button", name="Next").click()
    await expect(ids).to_have_text([str(i) for i in fails])
    await expect(page.get_by_role("button", name="Next")).to_be_disabled()
    await page.get_by_role("button", name="Previous").click()
    await expect(ids).to_have_text([str(i) for i in echoes])

    # by status, from the select or a counter
    await page.get_by_label("Filter by status").select_option("failed")
    await expect(ids).to_have_text([str(i) for i in fails])
    await expect(rows.locator(".status")).to_have_text(["failed"] * 3)
    await counts.locator('[data-status=""]').click()  # all
    await expect(ids).to_have_text([str(i) for i in echoes])
    await counts.locator('[data-status="failed"]').click()
    await expect(ids).to_have_text([str(i) for i in fails])

    # by type: the first ten tasks are all echoes, so the fails are read from further on
    await page.get_by_label("Filter by status").select_option("")
    await page.get_by_label("Filter by type").select_option("fail")
    await expect(ids).to_have_text([str(i) for i in fails])
    await page.get_by_label("Filter by type").select_option("")

    # another graph: its own tasks and counts, live as well
    await page.get_by_label("Graph").select_option("gs1/other")
    await expect(ids).to_have_text([str(elsewhere)])
    await expect(counts.locator('[data-status=""] .n')).to_have_text("1")
    later = await dashboard.submit("echo", {}, graph="/graphspaces/gs1/graphs/other", delay=3600)
    await expect(dashboard.row(later).locator(".status")).to_have_text("new")
    await expect(counts.locator('[data-status=""] .n')).to_have_text("2")
