"""Bulk actions and the list's filters from the Python client and the `sidetask` command
(run for real in a subprocess), against a real server on loopback."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from service.cli.exits import EXIT_ERROR, EXIT_USAGE
from service.client import APIError, BulkResult, Client
from tests.web.test_cli import api, sidetask, url, wait_task  # noqa: F401 - fixtures

LATER = 3600


async def test_client_lists_by_name_and_time_and_acts_in_bulk(api: Client) -> None:  # noqa: F811
    nightly = [await api.submit("echo", {}, name=f"nightly {n}", delay=LATER) for n in range(4)]
    other = await api.submit("echo", {}, name="other", delay=LATER)
    assert [t.id async for t in api.list(name="nightly")] == nightly
    first = await api.get(nightly[0])
    assert [t.id async for t in api.list(created_to=first.created_ms + 1)] == [nightly[0]]
    since = datetime.fromtimestamp(first.created_ms / 1000, UTC)
    assert [t.id async for t in api.list(created_from=since)][:1] == [nightly[0]]
    with pytest.raises(ValueError, match="time zone"):
        [t async for t in api.list(created_from=datetime(2026, 1, 1))]

    result = await api.bulk("pause", name="nightly")
    assert result == BulkResult("pause", matched=4, changed=4, refused={}, batches=1)
    result = await api.bulk("pause", "pending,new", task_type="echo")
    assert (result.matched, result.changed) == (5, 1)
    assert result.refused == {"Can't pause task in status PENDING, it is paused already": 4}
    assert (await api.get(other)).status == "pending"
    with pytest.raises(APIError, match="needs a filter"):
        await api.bulk("cancel")
    result = await api.bulk("cancel", every=True)
    assert (result.matched, result.changed) == (5, 5)
    result = await api.bulk("delete", every=True)
    assert (result.matched, result.changed) == (5, 5)
    assert [t async for t in api.list()] == []


async def test_bulk_command_asks_then_acts(url: str, api: Client) -> None:  # noqa: F811
    waiting = [await api.submit("echo", {}, name="batch a", delay=LATER) for _ in range(3)]
    kept = await api.submit("echo", {}, name="batch b", delay=LATER)

    said_no = await sidetask("bulk", "cancel", "--name", "batch a", "--url", url, stdin=b"n\n")
    assert said_no.code == EXIT_ERROR, said_no.out
    assert "This will cancel 3 tasks of DEFAULT/hugegraph." in said_no.err
    assert "Nothing done." in said_no.err
    assert {(await api.get(t)).status for t in waiting} == {"new"}

    said_yes = await sidetask("bulk", "cancel", "--name", "batch a", "--url", url, stdin=b"y\n")
    assert said_yes.code == 0, said_yes.err
    assert "Cancel: 3 of the 3 matching tasks changed." in said_yes.out
    assert {(await api.get(t)).status for t in waiting} == {"cancelled"}
    assert (await api.get(kept)).status == "new"

    again = await sidetask("bulk", "cancel", "--name", "batch", "--url", url, "--yes")
    assert again.code == 0, again.err
    assert "Cancel: 1 of the 4 matching tasks changed." in again.out
    assert "3 refused: Can't cancel task which is completed or cancelling" in again.out

    raw = await sidetask("bulk", "delete", "--status", "cancelled", "--url", url, "--yes", "--json")
    assert raw.code == 0, raw.err
    assert raw.json() == {
        "action": "delete",
        "matched": 4,
        "changed": 4,
        "refused": {},
        "batches": 1,
    }

    listed = await sidetask("ls", "--json", "--name", "batch", "--url", url)
    assert listed.json() == []

    no_filter = await sidetask("bulk", "cancel", "--url", url, "--yes")
    assert no_filter.code == EXIT_USAGE and "give a filter" in no_filter.err
    forced = await sidetask("bulk", "cancel", "--all", "--force", "--url", url, "--yes")
    assert forced.code == EXIT_USAGE and "--force goes with delete only" in forced.err
    bad = await sidetask("bulk", "cancel", "--created-from", "soon", "--url", url, "--yes")
    assert bad.code == EXIT_ERROR and "'created_from' must be a time" in bad.err
