"""The /docs page in Chromium: Swagger UI, loaded from the service only under the
dashboard's Content-Security-Policy, renders the operations of /openapi.json."""

from __future__ import annotations

from typing import Any

from playwright.async_api import Browser, expect

from tests.browser.conftest import ServerProcess


async def test_the_docs_page_renders_the_operations(
    browser: Browser, server: ServerProcess
) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on("pageerror", lambda error: errors.append(str(error)))

    def console(message: Any) -> None:
        if message.type == "error":  # a CSP refusal is logged here too
            errors.append(message.text)

    page.on("console", console)
    response = await page.goto(f"{server.url}/docs")
    assert response is not None and response.status == 200
    assert "default-src 'self'" in response.headers["content-security-policy"]

    await expect(page.locator(".swagger-ui .info .title")).to_contain_text("sidetask")
    # operations of each kind of route, by method and path, as Swagger UI lists them
    for method, path in [
        ("GET", "/graphs/{graph}/tasks"),
        ("POST", "/graphs/{graph}/jobs/{type}"),
        ("PUT", "/graphs/{graph}/tasks/{id}"),
        ("GET", "/graphspaces/{graphspace}/graphs/{graph}/events"),
        ("POST", "/workers/{worker}/claim"),
    ]:
        block = page.locator(f".opblock-{method.lower()}").filter(
            has=page.locator(".opblock-summary-path", has_text=path)
        )
        await expect(block.first).to_be_visible()
    assert await page.locator(".opblock").count() > 40

    # opened, an operation shows its parameters: order and type of the task list
    listing = page.locator(".opblock-get").filter(
        has=page.locator('.opblock-summary-path[data-path="/graphs/{graph}/tasks"]')
    )
    await listing.first.locator(".opblock-summary").click()
    await expect(listing.first.locator(".parameters")).to_contain_text("order")
    await expect(listing.first.locator(".parameters")).to_contain_text("type")
    await context.close()
    assert errors == [], "the page's code failed or the policy refused something"
    foreign = [
        u for u in requests if not u.startswith(f"{server.url}/") and not u.startswith("data:")
    ]
    assert foreign == [], "the page loaded something that is not the service's"
