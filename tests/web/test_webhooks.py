"""Webhooks end to end (README, "Webhooks"): a real receiver on loopback gets each task's
change signed, at least once, through a receiver that is down, slow, failing or gone; the
allow-list refuses private targets; the deliveries are shown and go with their task. On
both stores."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from service.client import Client, Delivery
from service.web import create_app
from service.web.keys import STORE
from service.webhooks import verify
from tests.conftest import free_port, get_task, make_settings, submit, wait_for, wait_status
from tests.sup_util import Start
from tests.web.test_cli import sidetask
from tests.web.webhook_receiver import Receiver

BASE = "/graphs/hugegraph"
SECRET = "s3cret"
#: quick retries, so a test sees several tries in a fraction of a second
QUICK = {
    "callback_secret": SECRET,
    "webhook_allow": ("127.0.0.1",),
    "webhook_backoff": 0.05,
    "webhook_backoff_max": 0.2,
    "webhook_timeout": 2.0,
}


@pytest.fixture
def db(any_db: Path | str) -> Path | str:
    return any_db


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = await Receiver().start()
    yield found
    await found.stop()


async def deliveries(client: TestClient, task_id: int) -> list[dict[str, Any]]:
    response = await client.get(f"{BASE}/tasks/{task_id}/deliveries")
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["id"] == task_id
    return list(body["deliveries"])


async def settled(client: TestClient, task_id: int, count: int = 1) -> list[dict[str, Any]]:
    """The task's deliveries once `count` of them are no longer pending."""

    async def probe() -> list[dict[str, Any]] | None:
        found = await deliveries(client, task_id)
        done = [d for d in found if d["state"] != "pending"]
        return found if len(done) >= count else None

    return await wait_for(probe, 15, f"task {task_id}'s deliveries to settle")


async def test_a_callback_is_delivered_signed_with_the_task_as_get_shows_it(
    start: Start, receiver: Receiver
) -> None:
    client = await start(**QUICK)
    task_id = await submit(client, BASE, "echo", {"x": 1}, callback=receiver.url)
    [delivery] = await settled(client, task_id)
    assert len(receiver.hits) == 1
    hit = receiver.hits[0]
    # the body is the task as GET shows it, at its end
    assert orjson.loads(hit.body) == await get_task(client, BASE, task_id)
    assert hit.headers["Content-Type"] == "application/json"
    assert hit.headers["Sidetask-Event"] == "success"
    # Stripe's scheme: t=<seconds>,v1=HMAC-SHA256(secret, "<t>." + body)
    signature = hit.headers["Sidetask-Signature"]
    stamp = int(signature.split(",")[0].removeprefix("t="))
    assert abs(time.time() - stamp) < 600
    mac = hmac.new(SECRET.encode(), f"{stamp}.".encode() + hit.body, hashlib.sha256)
    assert signature == f"t={stamp},v1={mac.hexdigest()}"
    assert verify(SECRET, signature, hit.body)
    assert not verify("another secret", signature, hit.body)
    assert not verify(SECRET, signature, hit.body + b" ")
    # a replay of an old signature is refused by its age
    assert not verify(SECRET, signature, hit.body, now=stamp + 301)
    assert delivery["delivery"] == hit.headers["Sidetask-Delivery"]
    assert delivery["hook"] == "callback"
    assert delivery["url"] == receiver.url
    assert (delivery["event"], delivery["status"]) == ("task.status", "success")
    assert (delivery["state"], delivery["attempts"], delivery["next_try"]) == ("delivered", 1, None)
    assert delivery["last_answer"]["code"] == 200
    assert delivery["last_answer"]["error"] is None
    assert delivery["answers"] == [delivery["last_answer"]]


async def test_configured_hooks_match_their_statuses_and_types(
    start: Start, receiver: Receiver
) -> None:
    hooks = [
        {"name": "failures", "url": receiver.url + "/f", "secret": "a", "statuses": ["failed"]},
        {"name": "echo-runs", "url": receiver.url + "/e", "secret": "b",
         "statuses": ["running", "success"], "types": ["echo"]},
    ]  # fmt: skip
    client = await start(**QUICK, hooks=hooks)
    echo = await submit(client, BASE, "echo", {})
    failing = await submit(client, BASE, "fail", {"message": "no"}, max_retries=0)
    await wait_status(client, BASE, failing, "failed")
    found = await settled(client, echo, 2)
    assert sorted((d["hook"], d["status"]) for d in found) == [
        ("echo-runs", "running"),
        ("echo-runs", "success"),
    ]
    [failure] = await settled(client, failing)
    assert (failure["hook"], failure["status"], failure["state"]) == (
        "failures",
        "failed",
        "delivered",
    )
    by_path = {hit.path: hit for hit in receiver.hits}
    assert set(by_path) == {"/hook/f", "/hook/e"}
    assert verify("a", by_path["/hook/f"].headers["Sidetask-Signature"], by_path["/hook/f"].body)
    # a delivery id per delivery, the same on each of its tries
    assert len(set(receiver.delivery_ids())) == len(receiver.hits) == 3


async def test_a_receiver_that_is_down_gets_the_delivery_once_it_is_up(start: Start) -> None:
    port = free_port()  # nothing listens there yet
    client = await start(**QUICK)
    task_id = await submit(client, BASE, "echo", {}, callback=f"http://127.0.0.1:{port}/hook")

    async def refused_twice() -> bool:
        found = await deliveries(client, task_id)
        return bool(found) and found[0]["attempts"] >= 2

    await wait_for(refused_twice, 15, "two refused tries")
    [pending] = await deliveries(client, task_id)
    assert pending["state"] == "pending"
    assert pending["next_try"] is not None
    assert pending["last_answer"]["code"] is None
    assert pending["last_answer"]["error"].startswith("no connection")
    receiver = await Receiver().start(port)
    try:
        [delivery] = await settled(client, task_id)
        assert delivery["state"] == "delivered"
        assert delivery["attempts"] >= 3
        assert delivery["last_answer"]["code"] == 200
        assert len(receiver.hits) == 1
        assert receiver.hits[0].headers["Sidetask-Delivery"] == delivery["delivery"]
    finally:
        await receiver.stop()


async def test_a_slow_receiver_is_timed_out_and_tried_again(
    start: Start, receiver: Receiver
) -> None:
    receiver.plan = [5.0]  # the first answer comes after the timeout
    client = await start(**{**QUICK, "webhook_timeout": 0.3})
    task_id = await submit(client, BASE, "echo", {}, callback=receiver.url)
    [delivery] = await settled(client, task_id)
    assert delivery["state"] == "delivered"
    first, *_, last = delivery["answers"]
    assert first["code"] is None
    assert first["error"] == "no answer within 0.3 s"
    assert last["code"] == 200
    ids = set(receiver.delivery_ids())
    assert ids == {delivery["delivery"]}  # the same delivery, sent again


async def test_a_5xx_is_retried_until_it_is_delivered(start: Start, receiver: Receiver) -> None:
    receiver.plan = [500, 503, (429, {"Retry-After": "0"})]
    client = await start(**QUICK)
    task_id = await submit(client, BASE, "echo", {}, callback=receiver.url)
    [delivery] = await settled(client, task_id)
    assert delivery["state"] == "delivered"
    assert [a["code"] for a in delivery["answers"]] == [500, 503, 429, 200]
    assert delivery["attempts"] == 4
    assert len(receiver.hits) == 4


@pytest.mark.parametrize("code", [410, 400, 404, 302])
async def test_a_permanent_failure_is_recorded_and_not_retried(
    start: Start, receiver: Receiver, code: int
) -> None:
    receiver.default = (code, {"Location": "http://127.0.0.1:1/elsewhere"})
    client = await start(**QUICK)
    task_id = await submit(client, BASE, "echo", {}, callback=receiver.url)
    [delivery] = await settled(client, task_id)
    assert (delivery["state"], delivery["attempts"], delivery["next_try"]) == ("failed", 1, None)
    assert delivery["last_answer"]["code"] == code
    # not tried again, and the redirect was not followed: a later task's delivery comes
    # after it, and the receiver saw one request of the first
    receiver.default = 200
    later = await submit(client, BASE, "echo", {}, callback=receiver.url)
    await settled(client, later)
    assert [h.path for h in receiver.hits] == ["/hook", "/hook"]
    assert (await deliveries(client, task_id))[0]["attempts"] == 1


async def test_retries_stop_after_webhook_retry_for(start: Start, receiver: Receiver) -> None:
    receiver.default = 500
    client = await start(**{**QUICK, "webhook_retry_for": 0.3})
    task_id = await submit(client, BASE, "echo", {}, callback=receiver.url)
    [delivery] = await settled(client, task_id)
    assert delivery["state"] == "failed"
    assert delivery["last_answer"]["code"] == 500
    assert delivery["attempts"] == len(receiver.hits) >= 2


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:9/hook", "127.0.0.1 is a loopback address"),
        ("http://localhost:9/hook", "'localhost' resolves to"),
        ("http://10.1.2.3/hook", "10.1.2.3 is a private address"),
        ("http://192.168.0.10/hook", "a private address"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://100.100.100.200/", "shared (carrier-grade NAT)"),
        ("http://[::1]:9/hook", "loopback"),
        ("http://[::ffff:10.0.0.1]/", "private"),
        ("http://0.0.0.0/", "private"),
        ("ftp://example.org/hook", "must be an http:// or https:// URL"),
        ("http://user:pw@example.org/hook", "credentials in the URL"),
        ("not a url", "must be an http:// or https:// URL"),
        ("http://does-not-exist.invalid/hook", "does not resolve"),
    ],
)
async def test_a_callback_the_allow_list_refuses_is_a_400_that_says_why(
    start: Start, url: str, why: str
) -> None:
    client = await start(callback_secret=SECRET)
    response = await client.post(f"{BASE}/jobs/echo", json={}, params={"callback": url})
    assert response.status == 400, await response.text()
    body = await response.json()
    assert body["exception"] == "IllegalArgumentException"
    assert why in body["message"], body["message"]
    listed = await client.get(f"{BASE}/tasks")
    assert (await listed.json())["tasks"] == []  # nothing was created


async def test_the_allow_list_lets_a_private_network_or_name_in(start: Start) -> None:
    client = await start(callback_secret=SECRET, webhook_allow=("10.0.0.0/8", "localhost"))
    for url in ("http://10.1.2.3/hook", "http://localhost:9/hook"):
        await submit(client, BASE, "echo", {}, callback=url, delay=3600)
    response = await client.post(
        f"{BASE}/jobs/echo", json={}, params={"callback": "http://192.168.1.1/"}
    )
    assert response.status == 400


async def test_a_callback_without_callback_secret_is_a_400(start: Start) -> None:
    client = await start()
    response = await client.post(
        f"{BASE}/jobs/echo", json={}, params={"callback": "https://example.org/hook"}
    )
    assert response.status == 400
    assert "callback_secret" in (await response.json())["message"]


async def test_a_hook_to_a_refused_target_is_recorded_failed(
    start: Start, receiver: Receiver
) -> None:
    hooks = [{"name": "local", "url": receiver.url, "secret": "k"}]
    client = await start(hooks=hooks, webhook_backoff=0.05)  # no webhook_allow: loopback refused
    task_id = await submit(client, BASE, "echo", {})
    [delivery] = await settled(client, task_id)
    assert (delivery["state"], delivery["attempts"]) == ("failed", 1)
    assert delivery["last_answer"]["error"].startswith("refused: ")
    assert "loopback" in delivery["last_answer"]["error"]
    assert receiver.hits == []


async def test_deliveries_go_with_their_task(start: Start, receiver: Receiver) -> None:
    client = await start(**QUICK)
    task_id = await submit(client, BASE, "echo", {}, callback=receiver.url)
    await settled(client, task_id)
    response = await client.delete(f"{BASE}/tasks/{task_id}")
    assert response.status == 204
    assert (await client.get(f"{BASE}/tasks/{task_id}/deliveries")).status == 404
    assert await client.app[STORE].deliveries(task_id) == []


async def test_deliveries_of_an_unknown_task_are_a_404(start: Start) -> None:
    client = await start(**QUICK)
    response = await client.get(f"{BASE}/tasks/99/deliveries")
    assert response.status == 404
    assert (await response.json())["message"] == "Can't find task with id '99'"


async def test_a_receiver_that_holds_the_request_does_not_slow_the_service(
    start: Start, receiver: Receiver
) -> None:
    """A receiver that never answers holds a slot of the deliverer, not the supervisor:
    other tasks run to their end meanwhile."""
    receiver.default = "hold"
    client = await start(**{**QUICK, "webhook_timeout": 30.0})
    first = await submit(client, BASE, "echo", {}, callback=receiver.url)
    await asyncio.wait_for(receiver.arrived.wait(), 10)
    others = [await submit(client, BASE, "echo", {"n": n}) for n in range(20)]
    for task_id in others:
        await wait_status(client, BASE, task_id, "success")
    [held] = await deliveries(client, first)
    assert (held["state"], held["attempts"]) == ("pending", 0)
    receiver.release.set()
    [delivery] = await settled(client, first)
    assert delivery["state"] == "delivered"


async def test_the_client_and_the_command_show_a_tasks_deliveries(
    tmp_path: Path, db: Path | str, receiver: Receiver
) -> None:
    """Client.deliveries, Client.submit(callback=…) and `sidetask deliveries ID` (a real
    subprocess) against a server on loopback."""
    receiver.plan = [500]
    settings = make_settings(tmp_path, db, **QUICK)
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        url = str(server.make_url("")).rstrip("/")
        async with Client(url) as api:
            task_id = await api.submit("echo", {}, callback=receiver.url)

            async def done() -> list[Delivery] | None:
                found = await api.deliveries(task_id)
                return found if found and found[0].state == "delivered" else None

            (delivery,) = await wait_for(done, 15, "the delivery")
            assert delivery.id == receiver.hits[-1].headers["Sidetask-Delivery"]
            assert (delivery.hook, delivery.url, delivery.status) == (
                "callback",
                receiver.url,
                "success",
            )
            assert (delivery.attempts, delivery.last_code, delivery.next_try_ms) == (2, 200, None)
            plain = await api.submit("echo", {})
            assert await api.deliveries(plain) == []
        shown = await sidetask("deliveries", str(task_id), "--url", url)
        assert shown.code == 0, shown.err
        assert "delivered" in shown.out and delivery.id[:12] in shown.out
        listed = await sidetask("deliveries", str(task_id), "--url", url, "--json")
        assert [d["delivery"] for d in listed.json()] == [delivery.id]
        none = await sidetask("deliveries", str(plain), "--url", url)
        assert (none.code, "no webhook deliveries" in none.out + none.err) == (0, True)
    finally:
        await server.close()


async def test_more_deliveries_than_slots_all_go_out(start: Start, receiver: Receiver) -> None:
    """webhook_concurrency 1: while its one slot is taken, commits that wrote more
    deliveries wake the deliverer, which waits for the slot (it once spun there without
    yielding, and nothing else ran); each goes out in turn."""
    receiver.default = 0.02  # each answer takes a moment: the slot is taken meanwhile
    client = await start(**{**QUICK, "webhook_concurrency": 1})
    tasks = [await submit(client, BASE, "echo", {"n": n}, callback=receiver.url) for n in range(8)]
    for task_id in tasks:
        [delivery] = await settled(client, task_id)
        assert delivery["state"] == "delivered"
    assert len(receiver.hits) == 8


async def test_metrics_count_the_tries_by_what_followed(start: Start, receiver: Receiver) -> None:
    receiver.plan = [500, 410]  # a retry, then a failure for good; then delivered
    client = await start(**QUICK)

    async def metric_lines() -> dict[str, float]:
        response = await client.get("/metrics")
        assert response.status == 200
        found: dict[str, float] = {}
        for line in (await response.text()).splitlines():
            if line.startswith(("sidetask_webhook_tries_total", "sidetask_webhook_in_flight")):
                name, value = line.rsplit(" ", 1)
                found[name] = float(value)
            elif line.startswith("sidetask_webhook_seconds_count"):
                found["count"] = float(line.rsplit(" ", 1)[1])
        return found

    before = await metric_lines()
    assert before['sidetask_webhook_tries_total{outcome="delivered"}'] == 0
    assert before["sidetask_webhook_in_flight"] == 0
    first = await submit(client, BASE, "echo", {}, callback=receiver.url)
    [failed] = await settled(client, first)
    assert failed["state"] == "failed"
    second = await submit(client, BASE, "echo", {}, callback=receiver.url)
    await settled(client, second)
    after = await metric_lines()
    assert after['sidetask_webhook_tries_total{outcome="retry"}'] == 1
    assert after['sidetask_webhook_tries_total{outcome="failed"}'] == 1
    assert after['sidetask_webhook_tries_total{outcome="delivered"}'] == 1
    assert after["count"] == 3
    assert after["sidetask_webhook_in_flight"] == 0
