"""Access: HTTP Basic users and Bearer tokens, the open routes, per-graph grants, and the
refusal to serve beyond loopback without authentication (README, "Access and limits")."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient

from service import auth, config
from service.config import ConfigError
from service.web import create_app
from tests.conftest import (
    BASES,
    ROOT,
    TEST_CONFIG,
    ServerProcess,
    free_port,
    make_settings,
    wait_for,
)
from tests.sse import SSEReader

#: cheap hashes keep the tests quick; one test below uses the shipped default
FAST = 1000


def basic(user: str, password: str) -> dict[str, str]:
    """HTTP Basic credentials as a header (aiohttp's BasicAuth is deprecated)."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


ADMIN_PASSWORD = "s3cret pass"
ALICE_PASSWORD = "wonderland"
ADMIN = basic("admin", ADMIN_PASSWORD)
ALICE = basic("alice", ALICE_PASSWORD)
TOKEN = "t0ken-for-ci"
NARROW_TOKEN = "only-gs1-other"
JSON_TYPE = "application/json;charset=UTF-8"


def auth_settings(tmp_path: Path, **overrides: Any) -> config.Settings:
    users = {
        "admin": auth.hash_password(ADMIN_PASSWORD, FAST),
        "alice": auth.hash_password(ALICE_PASSWORD, FAST),
    }
    tokens = {"ci": auth.hash_token(TOKEN), "narrow": auth.hash_token(NARROW_TOKEN)}
    grants = {"alice": ("DEFAULT/hugegraph",), "narrow": ("gs1/other",), "ci": ("*",)}
    return make_settings(tmp_path, users=users, tokens=tokens, grants=grants, **overrides)


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path) -> TestClient:
    return await aiohttp_client(create_app(auth_settings(tmp_path)))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def error_of(response: Any, status: int) -> str:
    assert response.status == status, await response.text()
    assert response.headers["Content-Type"] == JSON_TYPE
    body = await response.json()
    assert set(body) == {"exception", "message", "cause"}
    return str(body["message"])


async def submit(
    client: TestClient, base: str, job: str = "echo", body: Any = None, **kwargs: Any
) -> int:
    response = await client.post(
        f"{base}/jobs/{job}", json=body or {}, params={"delay": "3600"}, **kwargs
    )
    assert response.status == 201, await response.text()
    return int((await response.json())["task_id"])


# --- who gets in ---


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/graphs/hugegraph/tasks"),
        ("GET", "/graphspaces/DEFAULT/graphs/hugegraph/tasks/1"),
        ("POST", "/graphs/hugegraph/jobs/echo"),
        ("PUT", "/graphs/hugegraph/tasks/1?action=cancel"),
        ("DELETE", "/graphs/hugegraph/tasks/1"),
        ("GET", "/events"),
        ("GET", "/graphs/hugegraph/events"),
        ("GET", "/metrics"),
        ("GET", "/graphspaces"),
        ("GET", "/types"),
        ("GET", "/ui"),
        ("POST", "/workers/w1/claim"),
        ("GET", "/no/such/route"),
    ],
)
async def test_without_credentials_every_other_route_is_a_401_with_a_challenge(
    client: TestClient, method: str, path: str
) -> None:
    response = await client.request(method, path)
    message = await error_of(response, 401)
    assert "Authentication required" in message
    challenges = response.headers.getall("WWW-Authenticate")
    assert 'Basic realm="sidetask", charset="UTF-8"' in challenges
    assert 'Bearer realm="sidetask"' in challenges
    # and nothing was created or changed on the way
    listed = await client.get("/graphs/hugegraph/tasks", headers=ADMIN)
    assert (await listed.json())["tasks"] == []


@pytest.mark.parametrize("path", ["/versions", "/health", "/ready", "/openapi.json"])
async def test_the_open_routes_need_no_credentials(client: TestClient, path: str) -> None:
    response = await client.get(path)
    assert response.status == 200, await response.text()


async def test_a_user_with_the_right_password_gets_in(client: TestClient) -> None:
    for base in BASES:
        task_id = await submit(client, base, headers=ADMIN)
        response = await client.get(f"{base}/tasks/{task_id}", headers=ADMIN)
        assert response.status == 200
        assert (await response.json())["id"] == task_id


async def test_a_token_gets_in(client: TestClient) -> None:
    task_id = await submit(client, BASES[0], headers=bearer(TOKEN))
    response = await client.get(
        f"{BASES[1]}/tasks/{task_id}", headers={"Authorization": f"bearer  {TOKEN} "}
    )
    assert response.status == 200


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (basic("admin", "wrong")["Authorization"], "Invalid user name or password"),
        (basic("nobody", ADMIN_PASSWORD)["Authorization"], "Invalid user name or password"),
        (basic("admin", "")["Authorization"], "Invalid user name or password"),
        ("Basic !!!not-base64!!!", "not valid HTTP Basic credentials"),
        ("Basic " + base64.b64encode(b"\xff\xfe:x").decode(), "not valid HTTP Basic credentials"),
        ("Basic " + base64.b64encode(b"no-colon").decode(), "no ':'"),
        ("Basic", "not valid HTTP Basic credentials"),
        ("Bearer not-the-token", "Invalid Bearer token"),
        ("Bearer", "The Bearer token is empty"),
        (
            f"Digest {TOKEN}",
            "The Authorization scheme 'digest' is not accepted here; use Basic or Bearer",
        ),
        ("   ", "Authentication required"),
    ],
)
async def test_wrong_or_malformed_credentials_are_a_401_that_says_why(
    client: TestClient, header: str, expected: str
) -> None:
    response = await client.get("/graphs/hugegraph/tasks", headers={"Authorization": header})
    assert expected in await error_of(response, 401)
    assert response.headers.getall("WWW-Authenticate")


async def test_a_refused_password_is_not_remembered_and_a_right_one_is(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keep-alive clients send their credentials with every request: the slow hash runs
    once for them, and again for every wrong guess."""
    checks: list[str] = []
    verify = auth.verify

    def counting(secret: str, stored: auth.ParsedHash) -> bool:
        checks.append(secret)
        return verify(secret, stored)

    monkeypatch.setattr(auth, "verify", counting)
    for _ in range(10):
        assert (await client.get("/graphs/hugegraph/tasks", headers=ADMIN)).status == 200
    assert checks == [ADMIN_PASSWORD]
    for _ in range(3):
        assert (
            await client.get("/graphs/hugegraph/tasks", headers=basic("admin", "guess"))
        ).status == 401
    assert checks == [ADMIN_PASSWORD] + ["guess"] * 3


async def test_metrics_need_credentials_unless_public(aiohttp_client: Any, tmp_path: Path) -> None:
    closed = await aiohttp_client(create_app(auth_settings(tmp_path / "a")))
    assert (await closed.get("/metrics")).status == 401
    assert (await closed.get("/metrics", headers=ADMIN)).status == 200
    public = await aiohttp_client(create_app(auth_settings(tmp_path / "b", metrics_public=True)))
    response = await public.get("/metrics")
    assert response.status == 200
    assert "sidetask_tasks" in await response.text()
    assert (await public.get("/graphs/hugegraph/tasks")).status == 401


async def test_without_users_or_tokens_nothing_asks_for_credentials(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await aiohttp_client(create_app(make_settings(tmp_path)))
    response = await client.get("/graphs/hugegraph/tasks")
    assert response.status == 200
    assert "WWW-Authenticate" not in response.headers


# --- grants ---


async def test_a_user_reaches_only_its_graphs_and_the_others_look_absent(
    client: TestClient,
) -> None:
    mine = "/graphs/hugegraph"
    theirs = "/graphspaces/gs1/graphs/other"
    their_task = await submit(client, theirs, headers=ADMIN)
    my_task = await submit(client, mine, headers=ALICE)

    assert (await client.get(f"{mine}/tasks/{my_task}", headers=ALICE)).status == 200
    for method, path in [
        ("GET", f"{theirs}/tasks"),
        ("GET", f"{theirs}/tasks/{their_task}"),
        ("PUT", f"{theirs}/tasks/{their_task}?action=cancel"),
        ("DELETE", f"{theirs}/tasks/{their_task}?force=true"),
        ("POST", f"{theirs}/jobs/echo"),
        ("GET", f"{theirs}/tasks/counts"),
        ("GET", f"{theirs}/tasks/{their_task}/events"),
        ("GET", f"{theirs}/events"),
    ]:
        refused = await client.request(method, path, headers=ALICE)
        # the very answer a graph that is not served gets
        absent = await client.request(method, path.replace("/other", "/nope"), headers=ADMIN)
        assert refused.status == absent.status == 404, f"{method} {path}"
        assert (await refused.json())["message"] == "Graph 'other' does not exist"
        assert (await absent.json())["message"] == "Graph 'nope' does not exist"
    # nothing of theirs changed
    task = await (await client.get(f"{theirs}/tasks/{their_task}", headers=ADMIN)).json()
    assert task["task_status"] != "cancelled"
    listed = await (await client.get(f"{theirs}/tasks", headers=ADMIN)).json()
    assert [t["id"] for t in listed["tasks"]] == [their_task]
    # a task id of another graph is not found under the user's own graph either
    assert (await client.get(f"{mine}/tasks/{their_task}", headers=ALICE)).status == 404


async def test_a_token_granted_one_graph_reaches_only_it(client: TestClient) -> None:
    allowed = "/graphspaces/gs1/graphs/other"
    await submit(client, allowed, headers=bearer(NARROW_TOKEN))
    assert (await client.get("/graphs/hugegraph/tasks", headers=bearer(NARROW_TOKEN))).status == 404
    assert (await client.get("/graphs/hugegraph/tasks", headers=bearer(TOKEN))).status == 200  # "*"


async def test_graph_lists_show_only_the_granted_graphs(client: TestClient) -> None:
    async def body(path: str, credentials: dict[str, str]) -> Any:
        response = await client.get(path, headers=credentials)
        assert response.status == 200, await response.text()
        return await response.json()

    assert await body("/graphspaces", ADMIN) == {"graphspaces": ["DEFAULT", "gs1"]}
    assert await body("/graphspaces/gs1/graphs", ADMIN) == {"graphs": ["hugegraph", "other"]}
    assert await body("/graphs", ALICE) == {"graphs": ["hugegraph"]}
    assert await body("/graphspaces", ALICE) == {"graphspaces": ["DEFAULT"]}
    assert await body("/graphspaces/gs1/graphs", bearer(NARROW_TOKEN)) == {"graphs": ["other"]}
    assert await body("/graphs", bearer(NARROW_TOKEN)) == {"graphs": []}
    response = await client.get("/graphspaces/gs1/graphs", headers=ALICE)
    assert response.status == 404  # as a graphspace with no graph


async def test_the_service_stream_gives_a_user_only_its_graphs_events(client: TestClient) -> None:
    streams = {
        who: await client.get("/events", **kwargs)
        for who, kwargs in {"alice": {"headers": ALICE}, "admin": {"headers": ADMIN}}.items()
    }
    for response in streams.values():
        assert response.status == 200
    other = await submit(client, "/graphspaces/gs1/graphs/other", headers=ADMIN)
    mine = await submit(client, "/graphs/hugegraph", headers=ADMIN)
    seen = {
        who: await SSEReader(response).until(lambda e: e.json.get("id") == mine)
        for who, response in streams.items()
    }
    assert {e.json["id"] for e in seen["admin"]} == {other, mine}
    assert {e.json["id"] for e in seen["alice"]} == {mine}
    for response in streams.values():
        response.close()

    # a replay after Last-Event-ID keeps to the same graphs
    replay = await client.get("/events", headers={**ALICE, "Last-Event-ID": "0"})
    events = await SSEReader(replay).until(lambda e: e.json.get("id") == mine)
    assert {e.json["id"] for e in events} == {mine}
    replay.close()


async def test_a_user_granted_some_graphs_may_not_claim_work_for_every_graph(
    client: TestClient,
) -> None:
    response = await client.post("/workers/w1/claim", headers=ALICE)
    assert "needs the grant" in await error_of(response, 403)
    response = await client.post("/workers/w1/claim", headers=bearer(TOKEN))
    assert response.status in (
        204,
        400,
    )  # not refused for access: this service has no external types


# --- the configuration ---


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"users": {"admin": "plain text"}}, "users.admin: unknown hash algorithm"),
        ({"users": {"admin": auth.hash_token("x")}}, "a password must be stored as pbkdf2_sha256"),
        ({"users": {"admin": "pbkdf2_sha256$0$c2FsdA$" + "A" * 43}}, "iterations must be 1 to"),
        ({"tokens": {"ci": "sha256$1234"}}, "tokens.ci: expected 'sha256$<64 hex digits>'"),
        ({"grants": {"ghost": ["*"]}}, "grants.ghost: no user or token of that name"),
        (
            {"tokens": {"ci": auth.hash_token("x")}, "grants": {"ci": ["DEFAULT/elsewhere"]}},
            "grants.ci: graph 'DEFAULT/elsewhere' is not one of graphs",
        ),
    ],
)
def test_credentials_that_cannot_be_used_are_a_configuration_error(
    values: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        config.load(TEST_CONFIG, env={}, **values)
    assert expected in str(raised.value)


# --- the command line: serving beyond loopback, making credentials ---


def run_cli(
    *args: str, stdin: str = "", env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_serving_beyond_loopback_without_credentials_refuses_to_start(tmp_path: Path) -> None:
    for host in ("0.0.0.0", "::", "192.0.2.10", "sidetask.example"):
        result = run_cli(
            "serve", "--host", host, "--port", str(free_port()), "--db", str(tmp_path / "x.db")
        )
        assert result.returncode == 2, result.stderr
        assert f"host '{host}' is not a loopback address" in result.stderr
        assert "sidetask hash-password" in result.stderr
        assert "--insecure" in result.stderr
    assert not (tmp_path / "x.db").exists()


async def test_insecure_serves_beyond_loopback_all_the_same(
    tmp_path: Path, http: ClientSession
) -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "serve", "--host", "0.0.0.0", "--port", str(port),
        "--db", str(tmp_path / "x.db"), "--config", str(TEST_CONFIG), "--insecure",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:

        async def ready() -> bool:
            assert process.returncode is None, "the server exited"
            try:  # bound to every address; the test talks to it over loopback only
                async with http.get(f"http://127.0.0.1:{port}/graphs/hugegraph/tasks") as response:
                    return response.status == 200
            except OSError:
                return False

        await wait_for(ready, 20, "the insecure server")
    finally:
        if process.returncode is None:
            process.terminate()
        output, _ = await asyncio.wait_for(process.communicate(), 30)
    assert "without authentication (--insecure)" in output.decode()


async def test_hash_password_and_new_token_make_credentials_a_server_accepts(
    tmp_path: Path, server_factory: Any, http: ClientSession
) -> None:
    made = run_cli("hash-password", "ops", stdin="correct horse\n")
    assert made.returncode == 0, made.stderr
    user_line = made.stdout.strip()
    assert user_line.startswith('ops = "pbkdf2_sha256$600000$')
    token_made = run_cli("new-token", "deploy")
    assert token_made.returncode == 0, token_made.stderr
    token, token_line = token_made.stdout.strip().splitlines()
    assert token_line.startswith('deploy = "sha256$')
    assert token not in token_line
    # what README, "Access and limits" shows: the comments on standard error, so standard
    # output is the token and the line alone
    assert token_made.stderr.splitlines() == [
        f"# the token (shown once): send it as 'Authorization: Bearer {token}'",
        "# under [tokens] in the configuration:",
    ]

    config_file = tmp_path / "auth.toml"
    config_file.write_text(
        TEST_CONFIG.read_text() + f"\n[users]\n{user_line}\n\n[tokens]\n{token_line}\n"
    )
    # bound to every address: allowed, because authentication is configured
    server: ServerProcess = server_factory(config_file=config_file)
    await server.wait_ready()
    url = f"{server.url}/graphs/hugegraph/tasks"
    async with http.get(url) as response:
        assert response.status == 401
    async with http.get(url, headers=basic("ops", "correct horse")) as response:
        assert response.status == 200
    async with http.get(url, headers=basic("ops", "wrong horse")) as response:
        assert response.status == 401
    async with http.get(url, headers=bearer(token)) as response:
        assert response.status == 200
    async with http.get(f"{server.url}/versions") as response:
        assert response.status == 200


def test_hash_password_refuses_an_empty_password_and_a_bad_name() -> None:
    empty = run_cli("hash-password", "ops", stdin="\n")
    assert empty.returncode == 2
    assert "empty" in empty.stderr
    bad = run_cli("hash-password", "a:b", stdin="x\n")
    assert bad.returncode == 2
    assert "can't be a name" in bad.stderr


async def test_pyhugegraph_reads_versions_without_credentials_and_works_with_them(
    server_factory: Any, tmp_path: Path
) -> None:
    from pyhugegraph.client import PyHugeClient

    config_file = tmp_path / "auth.toml"
    hashed = auth.hash_password("pw", FAST)
    config_file.write_text(TEST_CONFIG.read_text() + f'\n[users]\nadmin = "{hashed}"\n')
    server: ServerProcess = server_factory(config_file=config_file)
    await server.wait_ready()

    def use() -> list[Any]:
        client = PyHugeClient(server.url, "hugegraph", "admin", "pw", graphspace="DEFAULT")
        try:
            return list(client.task().list_tasks()["tasks"])
        finally:
            client.task().close()

    assert await asyncio.wait_for(asyncio.to_thread(use), 30) == []


# --- the OpenAPI document says so ---


async def test_the_document_declares_the_schemes_and_a_401_on_every_closed_operation(
    client: TestClient,
) -> None:
    from tests.web.test_openapi import operations

    document = await (await client.get("/openapi.json")).json()
    assert document["components"]["securitySchemes"] == {
        "basic": {"type": "http", "scheme": "basic", "description": "a user of `users`"},
        "bearer": {"type": "http", "scheme": "bearer", "description": "a token of `tokens`"},
    }
    assert document["security"] == [{"basic": []}, {"bearer": []}]
    for (method, path), operation in operations(document).items():
        if path in {"/versions", "/health", "/ready", "/openapi.json", "/docs", "/docs/{asset}"}:
            assert operation["security"] == [], path
            assert "401" not in operation["responses"], path
            answer = await client.request(method, path.replace("{asset}", "swagger-ui.css"))
            assert answer.status == 200, path
        else:
            assert "401" in operation["responses"], f"{method} {path}"
            assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
    claim = operations(document)[("POST", "/workers/{worker}/claim")]
    assert "403" in claim["responses"]


async def test_without_credentials_configured_the_document_has_no_401(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    from tests.web.test_openapi import operations

    client = await aiohttp_client(create_app(make_settings(tmp_path)))
    document = await (await client.get("/openapi.json")).json()
    assert "security" not in document
    assert "securitySchemes" not in document["components"]
    for key, operation in operations(document).items():
        assert "401" not in operation["responses"], key
