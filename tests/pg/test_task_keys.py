"""PostgreSQL keeps a task's unchanging keys (graph, type, name, creation time) in
task_keys, which the list filters read (schema 11). Every way a task comes and goes keeps
it whole: a schema made before it is filled in by the migration, a row written by hand
is keyed, and a task deleted (by the API, by the retention purge, by hand) leaves no key
behind; the filters on keys answer as before."""

from __future__ import annotations

import asyncpg

from service.model import Status
from service.selection import Selection
from service.store import pg_schema
from service.store.base import Change
from service.store.postgres import DEFAULT_SCHEMA, PostgresStore, migrate
from tests.store.conftest import GRAPH, OTHER, new

KEYS = 11  # the migration that made task_keys


async def test_the_migration_keys_the_tasks_stored_before_it(pg_dsn: str) -> None:
    assert pg_schema.MIGRATIONS[KEYS - 1].count("CREATE TABLE task_keys") == 1
    conn = await asyncpg.connect(pg_dsn, server_settings={"search_path": DEFAULT_SCHEMA})
    try:
        # a schema as the version before task_keys left it, with tasks in it
        await conn.execute(f"CREATE SCHEMA {DEFAULT_SCHEMA}")
        await conn.execute("CREATE TABLE schema_version (version integer NOT NULL)")
        for script in pg_schema.MIGRATIONS[: KEYS - 1]:
            await conn.execute(script)
        await conn.execute("INSERT INTO schema_version VALUES ($1)", KEYS - 1)
        for i in range(30):
            await conn.execute(
                "INSERT INTO tasks (graphspace, graph, name, type, callable, status,"
                " create_ms, update_ms) VALUES ($1, $2, $3, $4, 'x', 'success', $5, $5)",
                GRAPH.graphspace,
                GRAPH.graph,
                f"old {i % 3}",
                "gremlin" if i % 2 else "echo",
                1_000 + i,
            )
        assert await migrate(conn, DEFAULT_SCHEMA) == pg_schema.SCHEMA_VERSION
        assert await conn.fetchval("SELECT count(*) FROM task_keys") == 30
    finally:
        await conn.close()
    store = PostgresStore(pg_dsn)
    await store.open()
    try:
        gremlins = await store.list_tasks(GRAPH, None, None, task_type="gremlin")
        assert [t.id for t in gremlins] == list(range(2, 31, 2))
        named = await store.list_tasks(GRAPH, None, None, selection=Selection(name="old 1"))
        assert [t.name for t in named] == ["old 1"] * 10
        created = Selection(created_from=1_010, created_to=1_020)
        assert [t.id for t in await store.list_tasks(GRAPH, None, None, selection=created)] == (
            list(range(11, 21))
        )
    finally:
        await store.close()


async def test_every_way_in_keys_a_task_and_every_way_out_takes_its_key(pg_dsn: str) -> None:
    store = PostgresStore(pg_dsn)
    await store.open()
    conn = await asyncpg.connect(pg_dsn, server_settings={"search_path": DEFAULT_SCHEMA})
    try:
        made = [(await store.insert(new(name=f"job {i}", type="echo")))[0] for i in range(5)]
        other = (await store.insert(new(OTHER, name="job x", type="gremlin")))[0]
        await conn.execute(
            "INSERT INTO tasks (graphspace, graph, name, type, callable, status, create_ms,"
            " update_ms) VALUES ($1, $2, 'by hand', 'gremlin', 'x', 'new', 5, 5)",
            GRAPH.graphspace,
            GRAPH.graph,
        )
        by_hand = await store.list_tasks(GRAPH, None, None, task_type="gremlin")
        assert [t.name for t in by_hand] == ["by hand"]
        assert [t.id for t in await store.list_tasks(OTHER, None, None, task_type="gremlin")] == [
            other.id
        ]

        async def orphans() -> int:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM task_keys k"
                    " WHERE NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = k.id)"
                )
            )

        async def keyed() -> int:
            return int(await conn.fetchval("SELECT count(*) FROM task_keys"))

        assert (await keyed(), await orphans()) == (7, 0)
        # through the API's delete
        await store.transition_many([Change(made[0].id, Status.CANCELLED)])
        await store.delete(GRAPH, made[0].id, None)
        # by hand
        await conn.execute("DELETE FROM tasks WHERE name = 'by hand'")
        assert (await keyed(), await orphans()) == (5, 0)
        # the retention purge: every completed task older than now
        for task in made[1:3]:
            await store.transition_many([Change(task.id, Status.CANCELLED)])
        purged, _ = await store.purge(2**62, 0)
        assert purged == 2
        assert (await keyed(), await orphans()) == (3, 0)
        left = await store.list_tasks(GRAPH, None, None, selection=Selection(name="job"))
        assert [t.id for t in left] == [made[3].id, made[4].id]
    finally:
        await conn.close()
        await store.close()
