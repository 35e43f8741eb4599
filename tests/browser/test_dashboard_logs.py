"""The dashboard's task detail shows the task's log lines, live: a command's output lines
appear while it still runs, and the ones after them without a reload; another task's
detail shows its own. (A file of its own: its server declares a command job.)"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.browser.conftest import Dashboard, server_configured
from tests.conftest import ServerProcess

CMD = Path(__file__).resolve().parent.parent / "jobs_helpers" / "cmd.py"


@pytest.fixture
async def server(server_factory: Callable[..., ServerProcess], tmp_path: Path) -> ServerProcess:
    return await server_configured(
        server_factory,
        tmp_path,
        "[commands.steps]\n"
        + f'argv = ["{sys.executable}", "{CMD}", "progress", "{{steps}}", "{{hold}}"]\n'
        + 'params = { steps = "integer", hold = "string" }\n'
        + "[commands.exits]\n"
        + f'argv = ["{sys.executable}", "{CMD}", "exit", "{{code}}"]\n'
        + 'params = { code = "integer" }\n'
        + '[jobs]\ngated = "tests.browser.log_jobs:gated"\n',
    )


async def test_the_detail_shows_the_tasks_log_live(dashboard: Dashboard, tmp_path: Path) -> None:
    page = dashboard.page
    hold = tmp_path / "hold"
    task_id = await dashboard.submit("steps", {"steps": 3, "hold": str(hold)})
    await expect(dashboard.row(task_id).locator(".status")).to_have_text("running")
    await dashboard.row(task_id).click()
    detail = page.get_by_role("region", name="Task detail")
    lines = detail.get_by_role("list", name="Log").locator("li")
    # shown while the command waits on the file: read when the detail opened, or live
    await expect(lines.locator(".text")).to_have_text(["did step 1", "did step 2", "did step 3"])
    await expect(lines.locator(".level")).to_have_text(["info"] * 3)
    await expect(lines.locator(".attempt")).to_have_text(["#1"] * 3)
    await expect(dashboard.row(task_id).locator(".status")).to_have_text("running")

    # a failing command: its stderr line a warning; the detail switched shows its lines only
    failing = await dashboard.submit("exits", {"code": 2})
    await expect(dashboard.row(failing).locator(".status")).to_have_text("failed")
    await dashboard.row(failing).click()
    await expect(detail.get_by_role("heading", name=f"Task {failing}")).to_be_visible()
    await expect(lines.locator(".text")).to_have_text(["about to fail", "something went wrong"])
    await expect(lines.locator(".level")).to_have_text(["info", "warning"])

    # back to the first: its lines again, and the task ends when the file is there
    await dashboard.row(task_id).click()
    await expect(lines.locator(".text")).to_have_count(3)
    hold.write_text("")
    await expect(dashboard.row(task_id).locator(".status")).to_have_text("success")
    await expect(lines.locator(".text")).to_have_count(3)

    # a line written while the detail is open comes in live (a task.log event)
    go, end = tmp_path / "go", tmp_path / "end"
    gated = await dashboard.submit("gated", {"go": str(go), "end": str(end)})
    await expect(dashboard.row(gated).locator(".status")).to_have_text("running")
    await dashboard.row(gated).click()
    await expect(detail.get_by_role("heading", name=f"Task {gated}")).to_be_visible()
    await expect(lines.locator(".text")).to_have_text(["waiting for the go"])
    go.write_text("")
    await expect(lines.locator(".text")).to_have_text(["waiting for the go", "went"])
    await expect(lines.locator(".level")).to_have_text(["info", "warning"])
    # an input of long paths scrolls inside its box: the detail stays in its column, whole
    overflow = await detail.evaluate("el => el.scrollWidth - el.clientWidth")
    right = await detail.evaluate("el => el.getBoundingClientRect().right")
    assert overflow <= 0 and right <= await page.evaluate("window.innerWidth")
    await dashboard.screenshot("dashboard-log.png")
    end.write_text("")
    await expect(dashboard.row(gated).locator(".status")).to_have_text("success")

    # a task that has not run has no lines
    waiting = await dashboard.submit("echo", {}, delay=3600)
    await dashboard.row(waiting).click()
    await expect(detail.get_by_role("heading", name=f"Task {waiting}")).to_be_visible()
    await expect(lines).to_have_text(["no lines yet"])
