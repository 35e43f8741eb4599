"""The dashboard in a real browser: what a person sees and does on /ui."""

from __future__ import annotations

import re
import sqlite3
from typing import Any

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

    # the counters at the top, grouped
    counts = page.get_by_role("navigation", name="Tasks per status")
    await expect(counts.locator('[data-group="running"] .n')).to_have_text("1")
    await expect(counts.locator('[data-group="failed"] .n')).to_have_text("1")

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
    await expect(counts.locator('[data-group="cancelled"] .n')).to_have_text("1")
    await expect(counts.locator('[data-group="running"] .n')).to_have_text("0")

    # the timeline: every status it went through, from its stored events
    await expect(detail.locator("#timeline li .status")).to_have_text(
        ["new", "queued", "running", "cancelling", "cancelled"]
    )
    # the failed task's detail shows the error it ended with
    await dashboard.row(broken).click()
    await expect(detail.locator("#detail-result")).to_contain_text("the disk is on fire")
    await dashboard.row(task_id).click()
    await expect(detail.locator("#timeline li")).to_have_count(5)


async def test_a_job_from_the_form_runs_and_a_refused_one_says_why_beside_the_button(
    dashboard: Dashboard,
) -> None:
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

    # A submission the server refuses: with the detail open above the form (its timeline
    # long), the answer is beside the Submit button, in view, focused, and read out.
    await expect(detail.locator("#timeline li")).to_have_count(4)
    submit_button = form.get_by_role("button", name="Submit")
    await form.get_by_label("Delay (s)").fill("-1")
    await submit_button.click()
    await expect(message).to_have_text("The parameter 'delay' must be >= 0, but got '-1'")
    await expect(message).to_have_class(re.compile(r"\berror\b"))
    await expect(message).to_be_in_viewport()
    await expect(message).to_be_focused()
    await expect(message).to_have_attribute("aria-live", "assertive")
    await expect(submit_button).to_have_attribute("aria-describedby", "submit-message")
    button_box = await submit_button.bounding_box()
    message_box = await message.bounding_box()
    assert button_box is not None and message_box is not None
    # beside it: level with the button, not somewhere below
    assert abs(message_box["y"] - button_box["y"]) < button_box["height"] + 20, (
        button_box,
        message_box,
    )
    # and an input that is not JSON never leaves the page
    await form.get_by_label("Delay (s)").fill("")
    await form.get_by_label("Input (JSON)").fill("{not json")
    await submit_button.click()
    await expect(message).to_contain_text("The input is not valid JSON")
    await expect(message).to_be_in_viewport()
    await expect(message).to_be_focused()

    # delete a completed task: a plain delete, no question asked; the record and its row go
    await detail.get_by_role("button", name="Delete", exact=True).click()
    await expect(detail.get_by_role("alert")).to_have_text(f"Task {task_id} deleted.")
    await expect(row).to_have_count(0)
    async with dashboard.http.get(dashboard.api(f"/tasks/{task_id}")) as response:
        assert response.status == 404


async def test_newest_first_pages_filters_and_graphs(dashboard: Dashboard) -> None:
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
    await expect(counts.locator('[data-group="success"] .n')).to_have_text("10")
    await expect(counts.locator('[data-group="failed"] .n')).to_have_text("3")

    # ten to a page, newest first: page 1 holds the latest tasks
    newest = [str(i) for i in reversed(echoes + fails)]
    await page.get_by_label("Tasks per page").select_option("10")
    await expect(ids).to_have_text(newest[:10])
    await page.get_by_role("button", name="Older").click()
    await expect(page.locator("#page-label")).to_have_text("Page 2")
    await expect(ids).to_have_text(newest[10:])
    await expect(page.get_by_role("button", name="Older")).to_be_disabled()
    await page.get_by_role("button", name="Newer").click()
    await expect(ids).to_have_text(newest[:10])

    # new tasks appear live at the top of page 1, and the oldest rows move on to page 2,
    # while a running one reports its progress many times a second
    running = await dashboard.submit("sleep", SLOW, name="running")
    await expect(dashboard.row(running).locator(".status")).to_have_text("running")
    live = await dashboard.submit("echo", {}, delay=3600, name="just now")
    top = [str(live), str(running), *newest[:8]]
    await expect(ids).to_have_text(top)
    await expect(rows.first.locator(".name")).to_have_text("just now")
    await page.get_by_role("button", name="Older").click()
    await expect(ids).to_have_text(newest[8:])
    await page.get_by_role("button", name="Newest").click()
    await expect(ids).to_have_text(top)

    # by status, from the select or a counter
    await page.get_by_label("Filter by status").select_option("failed")
    await expect(ids).to_have_text([str(i) for i in reversed(fails)])
    await expect(rows.locator(".status")).to_have_text(["failed"] * 3)
    await counts.locator('[data-group=""]').click()  # all
    await expect(ids).to_have_text(top)
    await counts.locator('[data-group="failed"]').click()
    await expect(ids).to_have_text([str(i) for i in reversed(fails)])
    await counts.locator('[data-group="failed"]').click()  # again: every task
    await expect(ids).to_have_text(top)

    # by type, which the server filters: one read, and only fails come back
    asked = len(dashboard.requests)
    await page.get_by_label("Filter by type").select_option("fail")
    await expect(ids).to_have_text([str(i) for i in reversed(fails)])
    lists = [u for u in dashboard.requests[asked:] if "/tasks?" in u]
    assert len(lists) == 1 and "type=fail" in lists[0] and "order=desc" in lists[0], lists
    await page.get_by_label("Filter by type").select_option("")

    # another graph: its own tasks and counts, live as well
    await page.get_by_label("Graph").select_option("gs1/other")
    await expect(ids).to_have_text([str(elsewhere)])
    await expect(counts.locator('[data-group=""] .n')).to_have_text("1")
    later = await dashboard.submit("echo", {}, graph="/graphspaces/gs1/graphs/other", delay=3600)
    await expect(dashboard.row(later).locator(".status")).to_have_text("new")
    await expect(ids).to_have_text([str(later), str(elsewhere)])
    await expect(counts.locator('[data-group=""] .n')).to_have_text("2")


async def _act(dashboard: Dashboard, task_id: int, action: str) -> None:
    """An action through the API, as another client would take it."""
    url = dashboard.api(f"/tasks/{task_id}")
    async with dashboard.http.put(url, params={"action": action}) as response:
        assert response.status == 202, await response.text()


def _buttons(dashboard: Dashboard) -> Any:
    return dashboard.page.get_by_role("region", name="Task detail").get_by_role(
        "group", name="Actions"
    )


async def _enabled(dashboard: Dashboard) -> list[str]:
    """The labels of the detail's enabled action buttons."""
    buttons = _buttons(dashboard).get_by_role("button")
    return [
        (await buttons.nth(i).inner_text()).strip()
        for i in range(await buttons.count())
        if await buttons.nth(i).is_enabled()
    ]


async def _expect_enabled(dashboard: Dashboard, task_id: int, labels: list[str]) -> None:
    await dashboard.row(task_id).click()
    detail = dashboard.page.get_by_role("region", name="Task detail")
    await expect(detail.get_by_role("heading", name=f"Task {task_id}")).to_be_visible()
    enabled = _buttons(dashboard).locator("button:enabled")
    await expect(enabled).to_have_text(labels)
    assert await _enabled(dashboard) == labels


async def test_the_buttons_are_those_the_status_allows(dashboard: Dashboard) -> None:
    page = dashboard.page
    delayed = await dashboard.submit("echo", {}, delay=3600, name="delayed")
    paused = await dashboard.submit("echo", {}, delay=3600, name="paused")
    await _act(dashboard, paused, "pause")
    running = await dashboard.submit("sleep", SLOW, name="running")
    failed = await dashboard.submit("fail", {"message": "no"})
    done = await dashboard.submit("echo", {})
    for task_id, status in (
        (delayed, "new"), (paused, "pending"), (running, "running"), (failed, "failed"), (done, "success"),
    ):  # fmt: skip
        await expect(dashboard.row(task_id).locator(".status")).to_have_text(status)

    await _expect_enabled(dashboard, delayed, ["Cancel", "Pause", "Force delete…"])
    await _expect_enabled(dashboard, paused, ["Cancel", "Resume", "Force delete…"])
    await _expect_enabled(dashboard, running, ["Cancel", "Force delete…"])
    await _expect_enabled(dashboard, failed, ["Retry", "Delete"])
    await _expect_enabled(dashboard, done, ["Delete"])
    # a disabled button says why
    await expect(_buttons(dashboard).get_by_role("button", name="Cancel")).to_have_attribute(
        "title", "Cancel: not possible for a success task"
    )

    # the buttons follow the task live: paused elsewhere, Resume is what is left
    await dashboard.row(delayed).click()
    await expect(_buttons(dashboard).locator("button:enabled")).to_have_text(
        ["Cancel", "Pause", "Force delete…"]
    )
    await _act(dashboard, delayed, "pause")
    await expect(_buttons(dashboard).locator("button:enabled")).to_have_text(
        ["Cancel", "Resume", "Force delete…"]
    )

    # force delete asks first: declined, nothing happens; accepted, the record goes
    await dashboard.row(running).click()
    force = _buttons(dashboard).get_by_role("button", name="Force delete…")
    questions: list[str] = []

    async def decline(dialog: Any) -> None:
        questions.append(dialog.message)
        await dialog.dismiss()

    async def asked() -> list[str]:
        return questions

    page.once("dialog", decline)
    await force.click()
    await wait_for(asked, what="the confirmation")
    assert questions == [
        f"Task {running} is running: delete its record anyway? "
        "Its job runs on, and its end is not recorded."
    ]
    assert (await dashboard.task(running))["task_status"] == "running"

    async def accept(dialog: Any) -> None:
        await dialog.accept()

    page.once("dialog", accept)
    await force.click()
    await expect(dashboard.row(running)).to_have_count(0)
    async with dashboard.http.get(dashboard.api(f"/tasks/{running}")) as response:
        assert response.status == 404
    # deleted: nothing more can be done to it
    await expect(_buttons(dashboard).locator("button:enabled")).to_have_count(0)

    # retry of a failed task: it runs again, and fails again
    await _expect_enabled(dashboard, failed, ["Retry", "Delete"])
    await _buttons(dashboard).get_by_role("button", name="Retry").click()
    await expect(page.get_by_role("region", name="Task detail").get_by_role("alert")).to_have_text(
        re.compile(r"^retry: the task is ")
    )
    await expect(dashboard.row(failed).locator(".retries")).to_have_text("1")


async def test_counters_are_grouped_with_each_status_one_click_away(dashboard: Dashboard) -> None:
    page = dashboard.page
    waiting = [await dashboard.submit("echo", {}, delay=3600) for _ in range(2)]
    paused = await dashboard.submit("echo", {}, delay=3600, name="paused")
    await _act(dashboard, paused, "pause")
    running = await dashboard.submit("sleep", SLOW, name="running")
    done = [await dashboard.submit("echo", {}) for _ in range(2)]
    failed = await dashboard.submit("fail", {"message": "no"})
    cancelled = await dashboard.submit("echo", {}, delay=3600)
    await _act(dashboard, cancelled, "cancel")
    await expect(dashboard.row(running).locator(".status")).to_have_text("running")
    for task_id in done:
        await expect(dashboard.row(task_id).locator(".status")).to_have_text("success")
    await expect(dashboard.row(failed).locator(".status")).to_have_text("failed")

    counts = page.get_by_role("navigation", name="Tasks per status")
    groups = page.locator("#counts [data-group]")
    # a person's groups: waiting, paused, running, then done: success, failed, cancelled
    await expect(groups.locator(".label")).to_have_text(
        ["all", "waiting", "paused", "running", "success", "failed", "cancelled"]
    )
    await expect(groups.locator(".n")).to_have_text(["8", "2", "1", "1", "2", "1", "1"])
    await expect(counts.get_by_role("group", name="done")).to_contain_text("success")

    # a click on a group shows its tasks: waiting is five statuses, asked of the server
    asked = len(dashboard.requests)
    await counts.locator('[data-group="waiting"]').click()
    ids = page.locator("#tasks tbody tr td.num:first-child")
    await expect(ids).to_have_text([str(i) for i in reversed(waiting)])
    await expect(page.get_by_label("Filter by status")).to_have_value("group:waiting")
    await expect(counts.locator('[data-group="waiting"]')).to_have_attribute("aria-pressed", "true")
    lists = [u for u in dashboard.requests[asked:] if "/tasks?" in u]
    assert any("status=new%2Cscheduling%2Cscheduled%2Cqueued%2Crestoring" in u for u in lists), (
        lists
    )
    await counts.locator('[data-group="running"]').click()
    await expect(ids).to_have_text([str(running)])
    # a paused task resumed by another client: it runs and ends, and the counters follow live
    await _act(dashboard, paused, "resume")
    await expect(groups.locator(".n")).to_have_text(["8", "2", "0", "1", "3", "1", "1"])

    # each status: one click away
    detail = counts.get_by_role("group", name="Each status")
    await expect(detail).to_be_hidden()
    toggle = counts.get_by_role("button", name=re.compile("each status"))
    await expect(toggle).to_have_attribute("aria-expanded", "false")
    await toggle.click()
    await expect(toggle).to_have_attribute("aria-expanded", "true")
    await expect(detail).to_be_visible()
    statuses = [
        "new", "scheduling", "scheduled", "queued", "pending", "restoring", "running",
        "success", "cancelling", "cancelled", "failed", "unknown",
    ]  # fmt: skip
    await expect(detail.locator(".label")).to_have_text(statuses)
    await expect(detail.locator('[data-status="new"] .n')).to_have_text("2")
    await expect(detail.locator('[data-status="success"] .n')).to_have_text("3")
    await detail.locator('[data-status="new"]').click()
    await expect(ids).to_have_text([str(i) for i in reversed(waiting)])
    await expect(page.get_by_label("Filter by status")).to_have_value("new")

    # unknown shows once a task is: a row this version cannot read
    await expect(counts.locator('#counts [data-group="unknown"]')).to_have_count(0)
    with sqlite3.connect(dashboard.db) as conn:
        conn.execute("UPDATE tasks SET status = 'hibernating' WHERE id = ?", (waiting[0],))
    await dashboard.submit("echo", {})  # an event: the counters are read again
    await expect(counts.locator('#counts [data-group="unknown"] .n')).to_have_text("1")

    # what a person sees, for the record
    await detail.locator('[data-status="new"]').click()  # every task again
    await dashboard.row(waiting[1]).click()
    await expect(page.get_by_role("region", name="Task detail")).to_contain_text("due in")
    path = await dashboard.screenshot("dashboard.png")
    assert path.stat().st_size > 0


async def test_a_delayed_task_shows_when_it_is_due(dashboard: Dashboard) -> None:
    page = dashboard.page
    task_id = await dashboard.submit("echo", {}, delay=240, name="in four minutes")
    stored = await dashboard.task(task_id)
    due = dashboard.row(task_id).locator(".due")
    # in the table, beside its status
    await expect(dashboard.row(task_id).locator(".status")).to_have_text("new")
    await expect(due).to_have_text(re.compile(r"^due in [34] min$"))
    await expect(due).to_have_attribute("data-due", str(stored["task_run_at"]))
    # and in the detail, with its time
    await dashboard.row(task_id).click()
    detail = page.get_by_role("region", name="Task detail")
    field = detail.locator("#detail-fields dd .due")
    await expect(field).to_have_text(re.compile(r"^\d\d:\d\d:\d\d \(due in [34] min\)$"))
    # a task with no delay shows none
    now = await dashboard.submit("echo", {})
    await expect(dashboard.row(now).locator(".status")).to_have_text("success")
    await expect(dashboard.row(now).locator(".due")).to_have_count(0)
    # a short delay counts down to its start, then the due time goes
    soon = await dashboard.submit("sleep", SLOW, delay=4)
    await expect(dashboard.row(soon).locator(".due")).to_have_text(re.compile(r"^due in [1-4] s$"))
    # it counts down as the clock goes (the row itself is not written again meanwhile)
    await expect(dashboard.row(soon).locator(".due")).to_have_text(
        re.compile(r"^due (in 1 s|now)$")
    )
    await expect(dashboard.row(soon).locator(".status")).to_have_text("running")
    await expect(dashboard.row(soon).locator(".due")).to_have_count(0)

    # a task that comes onto a filtered page by a status event (which need not carry the
    # input) still shows its progress on the input's scale
    await page.get_by_label("Filter by status").select_option("group:running")
    await expect(dashboard.row(soon)).to_have_count(1)
    later = await dashboard.submit("sleep", SLOW, delay=0.5)
    await expect(dashboard.row(later).locator(".status")).to_have_text("running")
    await expect(dashboard.row(later).get_by_role("progressbar")).to_have_attribute(
        "aria-valuemax", "600"
    )


async def test_a_declared_progress_total_is_the_bars_end(dashboard: Dashboard) -> None:
    """task_progress_total, when the job declared one, wins over the input's `steps`."""
    page = dashboard.page
    task_id = await dashboard.submit("echo", {"steps": 100}, delay=3600)
    await expect(dashboard.row(task_id).locator(".status")).to_have_text("new")
    with sqlite3.connect(dashboard.db) as conn:
        conn.execute("UPDATE tasks SET progress = 10, progress_total = 40 WHERE id = ?", (task_id,))
    assert (await dashboard.task(task_id))["task_progress_total"] == 40
    await page.get_by_label("Tasks per page").select_option("25")  # the page is read again
    bar = dashboard.row(task_id).get_by_role("progressbar")
    await expect(bar).to_have_attribute("aria-valuemax", "40")
    await expect(bar).to_have_attribute("aria-valuenow", "10")
    await expect(bar.locator(".label")).to_have_text("10/40")


async def test_the_detail_lists_each_attempt_with_its_error(dashboard: Dashboard) -> None:
    """Each run of the selected task, its outcome and error, with the traceback a click away;
    kept up to date as runs start and end."""
    page = dashboard.page
    broken = await dashboard.submit("fail", {"message": "the disk is on fire"}, max_retries=1)
    await expect(dashboard.row(broken).locator(".status")).to_have_text("failed")
    await dashboard.row(broken).click()
    detail = page.get_by_role("region", name="Task detail")
    attempts = detail.get_by_role("list", name="Attempts").locator("li")
    await expect(attempts).to_have_count(2)
    await expect(attempts.locator(".number")).to_have_text(["#1", "#2"])
    await expect(attempts.locator(".status")).to_have_text(["failed", "failed"])
    await expect(attempts.locator(".attempt-error")).to_have_text(
        ["service.jobs.fail.JobFailed: the disk is on fire"] * 2
    )
    # the result is the task's, as before: HugeGraph's text
    await expect(detail.locator("#detail-result")).to_have_text("JobFailed: the disk is on fire")
    traceback = attempts.first.locator("pre.traceback")
    await expect(traceback).to_be_hidden()
    await attempts.first.get_by_text("Traceback", exact=True).click()
    await expect(traceback).to_be_visible()
    await expect(traceback).to_contain_text("Traceback (most recent call last):")
    await expect(traceback).to_contain_text('raise JobFailed(str(options.get("message"')
    # from the job's own frames: those of the service that ran it are left out
    await expect(traceback).not_to_contain_text("supervisor.py")
    await dashboard.screenshot("dashboard-attempts.png")

    # a running task's attempt is shown running, then as it ended, without a reload
    slow = await dashboard.submit("sleep", SLOW)
    await expect(dashboard.row(slow).locator(".status")).to_have_text("running")
    await dashboard.row(slow).click()
    await expect(detail.get_by_role("heading", name=f"Task {slow}")).to_be_visible()
    await expect(attempts).to_have_count(1)
    await expect(attempts.locator(".status")).to_have_text(["running"])
    await expect(attempts.locator(".attempt-error")).to_have_count(0)
    await detail.get_by_role("button", name="Cancel", exact=True).click()
    await expect(attempts.locator(".status")).to_have_text(["cancelled"])

    # a task that has not run has none
    waiting = await dashboard.submit("echo", {}, delay=3600)
    await dashboard.row(waiting).click()
    await expect(detail.get_by_role("heading", name=f"Task {waiting}")).to_be_visible()
    await expect(attempts).to_have_text(["not run yet"])
