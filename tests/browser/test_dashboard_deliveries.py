"""The dashboard's task detail shows the task's webhook deliveries: one that a receiver
refused once shows `pending` with its next try, then `delivered` after the retry, without
a reload; a task with no callback shows none. (A file of its own: its server signs
callbacks and lets them go to loopback.)"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.browser.conftest import Dashboard, server_configured
from tests.conftest import ServerProcess
from tests.web.webhook_receiver import Receiver


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = await Receiver().start()
    yield found
    await found.stop()


@pytest.fixture
async def server(server_factory: Callable[..., ServerProcess], tmp_path: Path) -> ServerProcess:
    return await server_configured(
        server_factory,
        tmp_path,
        'callback_secret = "s3cret"\n'
        + 'webhook_allow = ["127.0.0.1"]\n'
        # the retry a few seconds later: long enough to be seen pending
        + "webhook_backoff = 3.0\nwebhook_backoff_max = 3.0\n",
    )


async def test_the_detail_shows_a_tasks_deliveries_as_they_are_tried(
    dashboard: Dashboard, receiver: Receiver
) -> None:
    page = dashboard.page
    receiver.plan = [503]  # refused once, then delivered
    plain = await dashboard.submit("echo", {"n": 1})
    called = await dashboard.submit("echo", {"n": 2}, callback=receiver.url)
    await expect(dashboard.row(called).locator(".status")).to_have_text("success")
    await dashboard.row(called).click()
    deliveries = page.get_by_role("list", name="Webhook deliveries")
    item = deliveries.locator("li[data-delivery]")
    await expect(item).to_have_count(1)
    await expect(item.locator(".status")).to_have_text("pending")
    await expect(item).to_contain_text("on success")
    await expect(item).to_contain_text("1 try")
    await expect(item).to_contain_text("last answer: HTTP 503")
    await expect(item).to_contain_text("next try")
    await expect(item).to_contain_text(receiver.url)
    # the retry lands: shown without a reload
    await expect(item.locator(".status")).to_have_text("delivered")
    await expect(item).to_contain_text("2 tries")
    await expect(item).to_contain_text("last answer: HTTP 200")
    await expect(item).not_to_contain_text("next try")
    assert len(receiver.hits) == 2
    await dashboard.screenshot("dashboard-deliveries.png")
    # another task's detail shows its own: none
    await dashboard.row(plain).click()
    await expect(deliveries.locator("li")).to_have_text(["none"])
