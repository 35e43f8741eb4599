"""Metrics of three real replicas on one database, as Prometheus scrapes them: each
replica's counters count what it did (the submissions it accepted, the runs it made, the
ends it wrote), so their sum over the replicas is the cluster's; the tasks by status and
the queue are the cluster's, the same on every replica; `sidetask_replica_info` names
each replica."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
from aiohttp import ClientSession
from prometheus_client.parser import text_string_to_metric_families

from service.store.postgres import PostgresStore
from tests.conftest import ServerProcess, wait_for
from tests.pg.test_replicas import replicas
from tests.store.conftest import heard_of, new
from tests.sup_util import rows
from tests.web.test_recovery import post_job, wait_task

Factory = Callable[..., ServerProcess]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
#: echo tasks submitted to each replica
EACH = 8


@pytest.fixture
def db(pg_dsn: str) -> str:
    return pg_dsn


async def scrape(http: ClientSession, server: ServerProcess) -> Samples:
    async with http.get(f"{server.url}/metrics") as response:
        assert response.status == 200, await response.text()
        text = await response.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def named(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(labels) for (sample, labels) in samples if sample == name]


async def test_counters_sum_to_the_cluster_and_gauges_agree(
    server_factory: Factory, http: ClientSession, db: str
) -> None:
    servers = await replicas(server_factory, db)
    echoes = [await post_job(http, servers[n % 3], "echo", {"n": n}) for n in range(3 * EACH)]
    # fails its first run, then succeeds: one retry, two runs
    flaky = await post_job(http, servers[0], "fail_first", {"failures": 1}, max_retries=1)
    for task_id in echoes:
        await wait_task(http, servers[task_id % 3], task_id, "success")
    await wait_task(http, servers[1], flaky, "success")
    total = len(echoes)

    async def settled(server: ServerProcess) -> Samples | None:
        """The replica's scrape once its event pump has handed it every end (its own too)."""
        samples = await scrape(http, server)
        done = value(samples, "sidetask_tasks", status="success", type="echo")
        flaky_done = value(samples, "sidetask_tasks", status="success", type="fail_first")
        return samples if (done, flaky_done) == (total, 1) else None

    scrapes = [await wait_for(lambda s=s: settled(s), 15, f"{s.url} to count") for s in servers]

    # submissions: on the replica that accepted each, never on the others
    submitted = [value(s, "sidetask_submissions_total", type="echo") for s in scrapes]
    assert submitted == [EACH, EACH, EACH]
    assert [value(s, "sidetask_submissions_total", type="fail_first") for s in scrapes] == [
        1,
        0,
        0,
    ]
    # completions: on the replica that ran the task (and wrote its end); their sum, the
    # cluster's total, counts each task once
    ran_on = Counter(
        server for (server,) in rows(db, "SELECT server FROM tasks WHERE type = 'echo'")
    )
    ended = [
        value(s, "sidetask_completions_total", type="echo", outcome="success") for s in scrapes
    ]
    assert ended == [ran_on[f"r{n}"] for n in (1, 2, 3)]
    assert sum(ended) == total
    assert (
        sum(
            value(s, "sidetask_completions_total", type="fail_first", outcome="success")
            for s in scrapes
        )
        == 1
    )
    assert sum(value(s, "sidetask_retries_total", type="fail_first") for s in scrapes) == 1
    # every run timed once, by the replica that made it
    assert sum(value(s, "sidetask_task_run_seconds_count", type="echo") for s in scrapes) == total
    assert sum(value(s, "sidetask_task_run_seconds_count", type="fail_first") for s in scrapes) == 2

    # gauges of the shared queue: the cluster's, the same on every replica
    for samples in scrapes:
        assert value(samples, "sidetask_tasks", status="success", type="fail_first") == 1
        assert value(samples, "sidetask_queue_depth") == 0
        assert value(samples, "sidetask_oldest_waiting_seconds") == 0
        assert not [
            labels
            for labels in named(samples, "sidetask_tasks")
            if labels["status"] != "success" and value(samples, "sidetask_tasks", **labels)
        ]

    # the replica's name and its identity in the replicas table
    infos = [named(s, "sidetask_replica_info") for s in scrapes]
    assert [[info["server"] for info in i] for i in infos] == [["r1"], ["r2"], ["r3"]]
    identities = {info["replica"] for i in infos for info in i}
    assert identities == {str(replica) for (replica,) in rows(db, "SELECT id FROM replicas")}
    assert len(identities) == 3


async def test_a_store_tells_its_own_events_from_the_others(pg_dsn: str) -> None:
    """Every process hears every process's events; made_here says which it committed."""
    a, b = PostgresStore(pg_dsn), PostgresStore(pg_dsn)
    await a.open()
    await b.open()
    try:
        heard: list[tuple[int, bool]] = []
        a.add_listener(lambda events: heard.extend((e.task_id, a.made_here(e.id)) for e in events))
        first, _ = await a.insert(new())
        second, _ = await b.insert(new())
        third, _ = await a.insert(new())
        await heard_of(lambda: len(heard), 3)
        assert heard == [(first.id, True), (second.id, False), (third.id, True)]
        assert a.replica_id != b.replica_id
    finally:
        await a.close()
        await b.close()
