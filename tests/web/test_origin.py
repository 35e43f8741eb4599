"""Requests from web pages: the Host a request names and the Origin it comes from (README,
"Access and limits"). A refused request changes nothing: the store is read after each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service import auth, config
from service.config import ConfigError
from tests.conftest import get_task, submit
from tests.sup_util import Start

TASKS = "/graphs/hugegraph/tasks"
JOBS = "/graphs/hugegraph/jobs"
JSON_TYPE = "application/json;charset=UTF-8"


async def refused(response: Any, status: int, kind: str) -> str:
    """The message of a refusal with HugeGraph's error body."""
    assert response.status == status, await response.text()
    assert response.headers["Content-Type"] == JSON_TYPE
    body = await response.json()
    assert body["exception"] == kind
    return str(body["message"])


async def task_ids(client: TestClient) -> list[int]:
    response = await client.get(TASKS, params={"limit": "-1"})
    assert response.status == 200, await response.text()
    return [task["id"] for task in (await response.json())["tasks"]]


@pytest.fixture
async def client(start: Start) -> TestClient:
    return await start()


def own_origin(client: TestClient) -> str:
    return f"http://127.0.0.1:{client.port}"


# --- Host ---


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "localhost:8080",
        "LocalHost:8080",
        "localhost.:8080",
        "dashboard.localhost:9000",
        "127.0.0.1",
        "127.0.0.1:8080",
        "127.45.6.7:1",
        "[::1]",
        "[::1]:8080",
        "[0:0:0:0:0:0:0:1]:8080",
        "[::ffff:127.0.0.1]:8080",
    ],
)
async def test_loopback_names_and_addresses_pass_on_any_port(client: TestClient, host: str) -> None:
    headers = {"Host": host}
    assert (await client.get("/health", headers=headers)).status == 200
    response = await client.post(f"{JOBS}/echo", json={"n": 1}, headers=headers)
    assert response.status == 201, await response.text()
    assert (await client.get(TASKS, headers=headers)).status == 200


#: names and addresses a rebinding page, or a request meant for another machine, carries
FOREIGN_HOSTS = [
    "evil.example:8080",
    "evil.example",
    "127.0.0.1.nip.io:8080",
    "localhost.evil.example:8080",
    "192.168.1.20:8080",
    "[2001:db8::1]:8080",
]


@pytest.mark.parametrize("host", FOREIGN_HOSTS)
@pytest.mark.parametrize(
    "path", ["/health", "/ready", TASKS, "/events", "/ui", "/openapi.json", "/metrics", "/nowhere"]
)
async def test_a_foreign_host_is_refused_on_every_route(
    client: TestClient, host: str, path: str
) -> None:
    message = await refused(
        await client.get(path, headers={"Host": host}), 421, "MisdirectedRequestException"
    )
    assert f"The Host '{host}' is not a name this service answers to" in message
    assert "allowed_hosts" in message


@pytest.mark.parametrize("host", FOREIGN_HOSTS)
async def test_a_foreign_host_creates_and_changes_nothing(client: TestClient, host: str) -> None:
    waiting = await submit(client, "/graphs/hugegraph", "echo", {}, delay=3600)
    headers = {"Host": host}
    response = await client.post(f"{JOBS}/echo", json={"n": 1}, headers=headers)
    await refused(response, 421, "MisdirectedRequestException")
    response = await client.put(f"{TASKS}/{waiting}", params={"action": "cancel"}, headers=headers)
    await refused(response, 421, "MisdirectedRequestException")
    response = await client.delete(f"{TASKS}/{waiting}", params={"force": "true"}, headers=headers)
    await refused(response, 421, "MisdirectedRequestException")
    assert await task_ids(client) == [waiting]
    assert (await get_task(client, "/graphs/hugegraph", waiting))["task_status"] == "new"


@pytest.mark.parametrize(
    "host", ["evil.example:port", "evil.example:99999", "[::1", "[::1]x", "a b", ""]
)
async def test_a_host_header_that_is_not_a_host_is_a_400(client: TestClient, host: str) -> None:
    message = await refused(
        await client.get("/health", headers={"Host": host}), 400, "IllegalArgumentException"
    )
    assert "is not a host name or an IP address" in message


async def test_allowed_hosts_admits_names_and_names_under_a_domain(start: Start) -> None:
    client = await start(
        allowed_hosts=("sidetask", "Sidetask.Jobs.Svc", "*.svc.cluster.local", "10.1.2.3")
    )
    for host in (
        "sidetask:8080",
        "sidetask.jobs.svc",
        "sidetask.jobs.svc.cluster.local:8080",
        "10.1.2.3:8080",
        "localhost:8080",
    ):
        response = await client.post(f"{JOBS}/echo", json={}, headers={"Host": host})
        assert response.status == 201, (host, await response.text())
    for host in ("svc.cluster.local", "sidetask.example", "10.1.2.4:8080", "evil.example"):
        response = await client.get("/health", headers={"Host": host})
        await refused(response, 421, "MisdirectedRequestException")
    assert len(await task_ids(client)) == 5


async def test_a_star_in_allowed_hosts_admits_any_host(start: Start) -> None:
    client = await start(allowed_hosts=("*",))
    for host in ("evil.example:8080", "192.168.1.20", "[2001:db8::1]:8080"):
        assert (await client.get("/health", headers={"Host": host})).status == 200


async def test_the_bound_address_is_a_host(start: Start) -> None:
    client = await start(host="192.0.2.10")
    assert (await client.get("/health", headers={"Host": "192.0.2.10:8080"})).status == 200
    response = await client.get("/health", headers={"Host": "192.0.2.11:8080"})
    await refused(response, 421, "MisdirectedRequestException")


@pytest.mark.parametrize("bound", ["0.0.0.0", "::"])
async def test_bound_to_every_address_any_address_is_a_host_but_no_name(
    start: Start, bound: str
) -> None:
    client = await start(host=bound)
    for host in ("10.244.0.17:8080", "192.0.2.10", "[2001:db8::1]:8080"):
        assert (await client.get("/health", headers={"Host": host})).status == 200
    for host in ("evil.example:8080", "my-app:8080"):
        response = await client.get("/health", headers={"Host": host})
        await refused(response, 421, "MisdirectedRequestException")


# --- Origin and Sec-Fetch-Site ---


async def test_the_service_s_own_origin_passes(client: TestClient) -> None:
    port = client.port
    for host, origin in (
        (f"127.0.0.1:{port}", f"http://127.0.0.1:{port}"),
        (f"localhost:{port}", f"http://localhost:{port}"),
        (f"LOCALHOST:{port}", f"http://localhost:{port}"),
        (f"[::1]:{port}", f"http://[::1]:{port}"),
        ("localhost", "http://localhost"),  # port 80 either way
        ("localhost:80", "http://localhost"),
    ):
        headers = {"Host": host, "Origin": origin, "Sec-Fetch-Site": "same-origin"}
        response = await client.post(f"{JOBS}/echo", json={}, headers=headers)
        assert response.status == 201, (host, origin, await response.text())
    assert len(await task_ids(client)) == 6


#: origins of pages that are not the service's: another port of the same host (the same
#: site), another scheme, another name for the same machine, another site, a hidden one
def foreign_origins(port: int) -> list[str]:
    return [
        f"http://127.0.0.1:{port + 1}",
        f"https://127.0.0.1:{port}",
        f"http://localhost:{port}",
        "http://evil.example",
        "https://evil.example:8443",
        "chrome-extension://abcdefghijklmnop",
        "null",
    ]


async def test_a_foreign_origin_can_neither_create_nor_change_nor_delete(
    client: TestClient,
) -> None:
    waiting = await submit(client, "/graphs/hugegraph", "echo", {}, delay=3600)
    for origin in foreign_origins(client.port):
        headers = {"Origin": origin, "Sec-Fetch-Site": "same-site"}
        attempts = [
            # what a form posts: text/plain or form-urlencoded, no preflight
            client.post(
                f"{JOBS}/echo", data='{"a": 1}', headers={**headers, "Content-Type": "text/plain"}
            ),
            client.post(
                f"{JOBS}/echo",
                data="a=1",
                headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
            ),
            client.put(f"{TASKS}/{waiting}", params={"action": "cancel"}, headers=headers),
            client.put(f"{TASKS}/{waiting}", params={"action": "pause"}, headers=headers),
            client.delete(f"{TASKS}/{waiting}", params={"force": "true"}, headers=headers),
        ]
        for attempt in attempts:
            message = await refused(await attempt, 403, "ForbiddenException")
            if origin == "null":
                assert "Origin: null" in message
            else:
                assert f"A request from a page of origin '{origin}' is refused" in message
                assert "allowed_origins" in message
    assert await task_ids(client) == [waiting]
    assert (await get_task(client, "/graphs/hugegraph", waiting))["task_status"] == "new"


async def test_a_foreign_origin_cannot_read_or_stream(client: TestClient) -> None:
    """A GET with a foreign Origin is a CORS read its page would not be shown anyway."""
    headers = {"Origin": "http://evil.example"}
    for path in (TASKS, "/events", f"{TASKS}/1/events", "/ui"):
        await refused(await client.get(path, headers=headers), 403, "ForbiddenException")


async def test_a_refused_body_is_left_unread_and_the_connection_closed(client: TestClient) -> None:
    response = await client.post(
        f"{JOBS}/echo", json={"big": "x" * 100_000}, headers={"Origin": "http://evil.example"}
    )
    await refused(response, 403, "ForbiddenException")
    assert response.headers["Connection"] == "close"


@pytest.mark.parametrize("site", ["cross-site", "same-site", "Cross-Site"])
async def test_a_state_change_from_another_site_without_origin_is_refused(
    client: TestClient, site: str
) -> None:
    waiting = await submit(client, "/graphs/hugegraph", "echo", {}, delay=3600)
    headers = {"Sec-Fetch-Site": site}
    for attempt in (
        client.post(f"{JOBS}/echo", json={}, headers=headers),
        client.put(f"{TASKS}/{waiting}", params={"action": "cancel"}, headers=headers),
        client.delete(f"{TASKS}/{waiting}", params={"force": "true"}, headers=headers),
    ):
        message = await refused(await attempt, 403, "ForbiddenException")
        assert f"from a page of another origin (Sec-Fetch-Site: {site})" in message
    assert await task_ids(client) == [waiting]
    assert (await get_task(client, "/graphs/hugegraph", waiting))["task_status"] == "new"
    # a link followed from another site still opens the dashboard and the API's reads
    for path in ("/ui", TASKS):
        assert (await client.get(path, headers=headers)).status == 200


async def test_requests_without_origin_pass_as_they_always_did(client: TestClient) -> None:
    """curl, pyhugegraph, the Java client, service.client and workers send no Origin."""
    task_id = await submit(client, "/graphs/hugegraph", "echo", {}, delay=3600)
    for site in (None, "same-origin", "none"):
        headers = {} if site is None else {"Sec-Fetch-Site": site}
        response = await client.post(f"{JOBS}/echo", json={}, headers=headers)
        assert response.status == 201, await response.text()
    response = await client.put(f"{TASKS}/{task_id}", params={"action": "cancel"})
    assert response.status == 202, await response.text()
    assert (await get_task(client, "/graphs/hugegraph", task_id))["task_status"] == "cancelled"
    assert len(await task_ids(client)) == 4


async def test_allowed_origins_admits_a_page_of_another_site(start: Start) -> None:
    client = await start(allowed_origins=("https://Tools.Example.org", "http://127.0.0.1:3000"))
    waiting = await submit(client, "/graphs/hugegraph", "echo", {}, delay=3600)
    for origin, site in (
        ("https://tools.example.org", "cross-site"),
        ("http://127.0.0.1:3000", "same-site"),
    ):
        headers = {"Origin": origin, "Sec-Fetch-Site": site}
        response = await client.post(f"{JOBS}/echo", json={}, headers=headers)
        assert response.status == 201, await response.text()
        assert (await client.get(TASKS, headers=headers)).status == 200
    response = await client.put(
        f"{TASKS}/{waiting}",
        params={"action": "cancel"},
        headers={"Origin": "https://tools.example.org:443"},
    )
    assert response.status == 202, await response.text()
    for origin in (
        "http://tools.example.org",
        "https://tools.example.org:8443",
        "http://127.0.0.1:3001",
    ):
        response = await client.post(f"{JOBS}/echo", json={}, headers={"Origin": origin})
        await refused(response, 403, "ForbiddenException")
    assert len(await task_ids(client)) == 3


# --- where the check runs ---


async def test_the_check_runs_before_authentication_and_the_limits(start: Start) -> None:
    users = {"admin": auth.hash_password("secret", 1000)}
    client = await start(users=users, max_body_bytes=1024)
    # without credentials: the refusal, not a 401 (and no credentials are checked)
    response = await client.post(f"{JOBS}/echo", json={}, headers={"Origin": "http://evil.example"})
    await refused(response, 403, "ForbiddenException")
    response = await client.get(TASKS, headers={"Host": "evil.example"})
    await refused(response, 421, "MisdirectedRequestException")
    # a body over the limit from a foreign page: refused for where it comes from, unread
    response = await client.post(
        f"{JOBS}/echo",
        data=b"x" * 5000,
        headers={"Host": "evil.example", "Content-Type": "text/plain"},
    )
    await refused(response, 421, "MisdirectedRequestException")
    # the open routes are checked too
    response = await client.get("/versions", headers={"Origin": "http://evil.example"})
    await refused(response, 403, "ForbiddenException")


async def test_the_dashboard_may_not_be_framed(client: TestClient) -> None:
    for path in ("/ui", "/ui/app.js"):
        response = await client.get(path)
        assert response.status == 200
        assert response.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


async def test_the_document_names_both_refusals(client: TestClient) -> None:
    document = await (await client.get("/openapi.json")).json()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in {"get", "put", "post", "delete"}:
                responses = operation["responses"]
                assert "421" in responses, (method, path)
                assert "Origin" in responses["403"]["description"], (method, path)


@pytest.mark.parametrize(
    ("setting", "value", "words"),
    [
        (
            "allowed_hosts",
            "sidetask:8080",
            "'sidetask:8080' is not a host name or an IP address (without a port",
        ),
        ("allowed_hosts", "*.10.0.0.1", "'*.' goes before a name, not an address"),
        ("allowed_origins", "https://tools.example.org/sidetask", "is not an origin of the form"),
        ("allowed_origins", "null", "'null' is not an origin of the form"),
    ],
)
def test_an_entry_that_is_no_host_or_origin_stops_the_start(
    tmp_path: Path, setting: str, value: str, words: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        config.load(env={f"SIDETASK_{setting.upper()}": value}, db=str(tmp_path / "x.db"))
    assert str(raised.value).startswith(f"{setting}: ")
    assert words in str(raised.value)
    assert f"SIDETASK_{setting.upper()}" in str(raised.value)
