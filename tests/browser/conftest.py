"""Browser tests: a real `sidetask serve` on loopback, Debian's Chromium run headless, driven
by playwright's async API (its sync API would clash with pytest-asyncio's running loop).

playwright's own browser download is never used (`playwright install` fetches a build from
the internet): the Chromium is the system's, which scripts/test installs when missing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.conftest import ROOT, TEST_CONFIG, ServerProcess

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: screenshots for a person to look at; git-ignored
ARTIFACTS = ROOT / "artifacts"
#: the longest any expectation waits (tasks in these tests take well under a second to start)
WAIT_MS = 10_000

expect.set_options(timeout=WAIT_MS)


@pytest.fixture
async def server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    server = server_factory()
    await server.wait_ready()
    return server


async def server_configured(
    server_factory: Callable[..., ServerProcess], tmp_path: Path, extra: str
) -> ServerProcess:
    """A server on the tests' configuration with `extra` (TOML) after it, ready: for a file
    of tests whose server needs more (a command job, webhooks)."""
    conf = tmp_path / "extra.toml"
    conf.write_text(TEST_CONFIG.read_text() + extra)
    server = server_factory(config_file=conf)
    await server.wait_ready()
    return server


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/test installs it (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS, timeout=30_000
        )
        yield browser
        await browser.close()


@dataclass
class Dashboard:
    """The page, open on a real server, and that server's API for setting the scene."""

    page: Page
    url: str
    http: ClientSession
    #: what the page asked for: it must all be the service's own
    requests: list[str] = field(default_factory=list)
    #: uncaught exceptions and console errors of the page's code
    errors: list[str] = field(default_factory=list)
    #: the server's database file, for a row no API call makes (damage)
    db: Path = field(default_factory=Path)

    def api(self, path: str, graph: str = "/graphs/hugegraph") -> str:
        return f"{self.url}{graph}{path}"

    async def submit(
        self, job_type: str, body: Any, graph: str = "/graphs/hugegraph", **query: Any
    ) -> int:
        params = {k: str(v) for k, v in query.items()}
        async with self.http.post(
            self.api(f"/jobs/{job_type}", graph), json=body, params=params
        ) as response:
            assert response.status == 201, await response.text()
            return int((await response.json())["task_id"])

    async def task(self, task_id: int, graph: str = "/graphs/hugegraph") -> dict[str, Any]:
        async with self.http.get(self.api(f"/tasks/{task_id}", graph)) as response:
            assert response.status == 200, await response.text()
            return dict(await response.json())

    def row(self, task_id: int) -> Any:
        return self.page.locator(f'#tasks tbody tr[data-id="{task_id}"]')

    async def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        await self.page.screenshot(path=str(path), full_page=True)
        return path


def _console_error(errors: list[str]) -> Callable[[Any], None]:
    def record(message: Any) -> None:
        # an answer of 4xx is logged by Chromium as a failed load: the page shows those itself
        if message.type == "error" and "Failed to load resource" not in message.text:
            errors.append(message.text)

    return record


@pytest.fixture
async def dashboard(
    browser: Browser, server: ServerProcess, http: ClientSession
) -> AsyncIterator[Dashboard]:
    context = await browser.new_context(viewport={"width": 1440, "height": 900})
    page = await context.new_page()
    board = Dashboard(page, server.url, http, db=server.db)
    page.on("request", lambda request: board.requests.append(request.url))
    page.on("pageerror", lambda error: board.errors.append(str(error)))
    page.on("console", _console_error(board.errors))
    await page.goto(f"{server.url}/")
    # the page has read its graphs and types, opened the stream and read the first page
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    await expect(page.locator("#live")).to_have_text("live")
    yield board
    await context.close()
    assert board.errors == [], "the page's code failed"
    foreign = [
        u
        for u in board.requests
        if not u.startswith(f"{server.url}/") and not u.startswith("data:")
    ]
    assert foreign == [], "the page loaded something that is not the service's"
