"""Pages of other origins in a real browser: what they send reaches sidetask and is refused,
the dashboard still works, and no other page can frame it (service.web.origin)."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.browser.conftest import CHROMIUM_ARGS, Dashboard
from tests.conftest import ServerProcess, free_port, wait_for

GRAPH = "/graphs/hugegraph"
#: the name a rebinding page uses; the browser resolves it to 127.0.0.1
REBOUND = "rebound.example"
#: a name the service is told it is reached by (allowed_hosts), resolved to 127.0.0.1 too
LISTED = "sidetask.test"


@dataclass
class Site:
    """A second HTTP server on another port of 127.0.0.1: another origin, the same site."""

    url: str
    pages: dict[str, str]


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    pages: dict[str, str] = {}

    async def serve(request: web.Request) -> web.Response:
        body = pages.get(request.match_info["name"])
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(text=body, content_type="text/html")

    app = web.Application()
    app.router.add_get("/{name}", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield Site(f"http://127.0.0.1:{port}", pages)
    await runner.cleanup()


async def tasks_of(http: ClientSession, url: str) -> list[dict[str, Any]]:
    async with http.get(f"{url}{GRAPH}/tasks", params={"limit": "-1"}) as response:
        assert response.status == 200, await response.text()
        return list((await response.json())["tasks"])


async def submit(http: ClientSession, url: str, body: Any, **query: str) -> int:
    async with http.post(f"{url}{GRAPH}/jobs/echo", json=body, params=query) as response:
        assert response.status == 201, await response.text()
        return int((await response.json())["task_id"])


def attack_page(target: str, task_id: int) -> str:
    """Every request a page may send without the service's consent: fetches (a JSON POST
    and PUT and DELETE, each preflighted; a text/plain POST in no-cors mode, which is not),
    then an auto-submitted form (text/plain, which a JSON body fits into)."""
    return f"""<!doctype html>
<title>attack</title>
<form method="post" enctype="text/plain" action="{html.escape(target)}{GRAPH}/jobs/echo">
  <input type="hidden" name='{{"from": "form", "pad": "' value='"}}'>
</form>
<script>
const target = {target!r};
const results = {{}};
async function attempt(name, url, init) {{
  try {{
    const response = await fetch(target + url, init);
    results[name] = response.type + " " + response.status;
  }} catch (error) {{
    results[name] = error.name;
  }}
}}
(async () => {{
  await attempt("post", "{GRAPH}/jobs/echo", {{method: "POST",
    headers: {{"Content-Type": "application/json"}}, body: '{{"from": "fetch"}}'}});
  await attempt("post-no-cors", "{GRAPH}/jobs/echo", {{method: "POST", mode: "no-cors",
    headers: {{"Content-Type": "text/plain"}}, body: '{{"from": "no-cors"}}'}});
  await attempt("cancel", "{GRAPH}/tasks/{task_id}?action=cancel", {{method: "PUT"}});
  await attempt("delete", "{GRAPH}/tasks/{task_id}?force=true", {{method: "DELETE"}});
  await attempt("read", "{GRAPH}/tasks", {{}});
  document.body.dataset.results = JSON.stringify(results);
  document.forms[0].submit();
}})();
</script>
"""


def access_lines(server: ServerProcess, request_line: str, status: int) -> int:
    """How many access log lines record `request_line` answered with `status`."""
    return len(re.findall(rf'"{re.escape(request_line)}" {status} ', server.output()))


async def test_a_page_of_another_origin_changes_nothing(
    browser: Browser, server: ServerProcess, site: Site, http: ClientSession
) -> None:
    waiting = await submit(http, server.url, {"kept": True}, delay="3600")
    site.pages["attack.html"] = attack_page(server.url, waiting)
    context = await browser.new_context()
    page = await context.new_page()
    try:
        # the form's POST is the page's last act: its answer is the page the browser shows
        async with page.expect_response(
            lambda r: (
                r.url == f"{server.url}{GRAPH}/jobs/echo" and r.request.resource_type == "document"
            )
        ) as answer:
            await page.goto(f"{site.url}/attack.html")
        response = await answer.value
        assert response.status == 403
        assert "is refused" in (await response.json())["message"]
        await expect(page).to_have_url(f"{server.url}{GRAPH}/jobs/echo")
    finally:
        await context.close()

    # every request reached the service and was refused there, not left unsent: the
    # preflights of the JSON POST, the PUT and the DELETE, and the simple POSTs themselves
    assert access_lines(server, f"OPTIONS {GRAPH}/jobs/echo", 403) == 1
    assert access_lines(server, f"OPTIONS {GRAPH}/tasks/{waiting}?action=cancel", 403) == 1
    assert access_lines(server, f"OPTIONS {GRAPH}/tasks/{waiting}?force=true", 403) == 1
    assert access_lines(server, f"POST {GRAPH}/jobs/echo", 403) == 2  # no-cors fetch, form
    assert access_lines(server, f"GET {GRAPH}/tasks", 403) == 1
    # and nothing was created or changed
    (task,) = await tasks_of(http, server.url)
    assert (task["id"], task["task_status"]) == (waiting, "new")


async def test_the_dashboard_still_submits_and_cancels(
    dashboard: Dashboard, http: ClientSession
) -> None:
    page = dashboard.page
    form = page.get_by_role("region", name="Submit a job")
    await form.get_by_label("Job type").select_option("echo")
    await form.get_by_label("Input (JSON)").fill('{"from": "the dashboard"}')
    await form.get_by_label("Name").fill("own page")
    await form.get_by_role("button", name="Submit").click()
    await expect(form.get_by_role("status")).to_have_text(re.compile(r"^Task \d+ submitted\.$"))
    await expect(dashboard.row(1).locator(".status")).to_have_text("success")
    (task,) = await tasks_of(http, dashboard.url)
    assert (task["task_name"], task["task_status"]) == ("own page", "success")

    # a state change from the page itself: Cancel on a waiting task
    waiting = await dashboard.submit("echo", {}, delay=3600)
    await dashboard.row(waiting).click()
    detail = page.get_by_role("region", name="Task detail")
    await detail.get_by_role("button", name="Cancel", exact=True).click()
    await expect(dashboard.row(waiting).locator(".status")).to_have_text("cancelled")
    assert (await dashboard.task(waiting))["task_status"] == "cancelled"


async def test_another_page_cannot_frame_the_dashboard(
    browser: Browser, server: ServerProcess, site: Site
) -> None:
    # /health is framed as a control: frames load, the dashboard's alone is refused
    site.pages["frame.html"] = f"""<!doctype html>
<title>frames</title>
<iframe id="health" src="{server.url}/health"></iframe>
<iframe id="dashboard" src="{server.url}/ui"></iframe>
"""
    context = await browser.new_context()
    page = await context.new_page()
    refusals: list[str] = []
    page.on("console", lambda message: refusals.append(message.text))
    try:
        await page.goto(f"{site.url}/frame.html", wait_until="load")
        health = page.frame_locator("#health")
        await expect(health.locator("body")).to_contain_text('"status"')
        frames = {frame.url: frame for frame in page.frames}
        assert f"{server.url}/health" in frames
        # the dashboard's frame shows the browser's error page, never the dashboard
        assert f"{server.url}/ui" not in frames
        await expect(page.frame_locator("#dashboard").locator("#tasks")).to_have_count(0)
        await wait_for(
            _async(lambda: any("frame-ancestors 'none'" in text for text in refusals)),
            10,
            "the browser to report the refused frame",
        )
    finally:
        await context.close()


def _async(check: Any) -> Any:
    async def probe() -> bool:
        return bool(check())

    return probe


# --- DNS rebinding: a page whose name is re-pointed at 127.0.0.1 ---


@pytest.fixture
async def resolving_browser(chromium: Path) -> AsyncIterator[Browser]:
    """Chromium resolving REBOUND and LISTED to 127.0.0.1, as a rebound DNS name does.

    Chromium's Local Network Access checks are off: they refuse a page first loaded from a
    public address the requests to loopback, which would hide what the service itself does
    (and other browsers have no such checks)."""
    args = [
        *CHROMIUM_ARGS,
        f"--host-resolver-rules=MAP {REBOUND} 127.0.0.1, MAP {LISTED} 127.0.0.1",
        "--disable-features=LocalNetworkAccessChecks,BlockInsecurePrivateNetworkRequests,"
        "PrivateNetworkAccessSendPreflights",
    ]
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium), args=args, timeout=30_000
        )
        yield browser
        await browser.close()


REBIND_SCRIPT = """async (taskId) => {
  const results = {};
  for (const [name, path, init] of [
    ["post", "/graphs/hugegraph/jobs/echo", {method: "POST", body: '{"from": "rebound"}'}],
    ["read", `/graphs/hugegraph/tasks/${taskId}`, {}],
  ]) {
    try {
      const response = await fetch(path, init);
      results[name] = response.status + " " + (await response.text());
    } catch (error) {
      results[name] = error.name;
    }
  }
  return results;
}"""


async def _page_at(browser: Browser, url: str) -> tuple[Any, Page]:
    """A page whose document is a blank page at `url`, as the rebinding page's first load
    was (from the attacker's server); its later requests go to 127.0.0.1."""
    context = await browser.new_context()
    page = await context.new_page()
    await page.route(
        url,
        lambda route: route.fulfill(
            body="<!doctype html><title>page</title>", content_type="text/html"
        ),
    )
    await page.goto(url)
    return context, page


async def test_a_rebound_name_reads_and_writes_nothing(
    resolving_browser: Browser, server_factory: Any, http: ClientSession
) -> None:
    server = server_factory(env={"SIDETASK_ALLOWED_HOSTS": LISTED})
    await server.wait_ready()
    waiting = await submit(http, server.url, {"secret": "input"}, delay="3600")

    # the control: the same page under a listed name is served, so requests do reach it
    context, page = await _page_at(resolving_browser, f"http://{LISTED}:{server.port}/page.html")
    try:
        results = await page.evaluate(REBIND_SCRIPT, waiting)
    finally:
        await context.close()
    assert results["post"].startswith("201 "), results
    assert "secret" in results["read"], results

    # the rebinding page: its requests are its own origin's, so only their Host tells
    context, page = await _page_at(resolving_browser, f"http://{REBOUND}:{server.port}/page.html")
    try:
        results = await page.evaluate(REBIND_SCRIPT, waiting)
        dashboard = await page.goto(f"http://{REBOUND}:{server.port}/ui")
        assert dashboard is not None and dashboard.status == 421
    finally:
        await context.close()
    for name in ("post", "read"):
        assert results[name].startswith("421 "), results
        assert "MisdirectedRequestException" in results[name]
        assert "secret" not in results[name]
    tasks = await tasks_of(http, server.url)
    assert [t["id"] for t in tasks] == [waiting, waiting + 1]  # the control's alone
    assert tasks[0]["task_status"] == "new"
