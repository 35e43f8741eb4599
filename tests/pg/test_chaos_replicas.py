"""The short chaos run across replicas: three real `python -m service serve` processes on
one PostgreSQL database, SIGKILLed in turn under submission load, each replaced by a fresh
one (scripts/chaos --replicas 3 runs the long one). Nothing acknowledged is lost, everything
acknowledged completes, no task runs in two live replicas at once, every stored status
change is allowed, and an event stream followed across the replicas (moved off each victim,
resumed with Last-Event-ID) received every stored event once, in order."""

from __future__ import annotations

from pathlib import Path

from tests.chaos_helpers.chaos import run_chaos


async def test_replicas_killed_in_turn_lose_nothing_and_the_stream_misses_nothing(
    tmp_path: Path, pg_dsn: str
) -> None:
    report = await run_chaos(
        tmp_path / "chaos",
        kills=4,
        submitters=6,
        per_server=(5, 10),
        seed=11,
        finish_timeout=40,
        db_url=pg_dsn,
        replicas=3,
    )
    assert report.ok, report.line()
    assert report.kills == 4 and report.acked >= 20, report.line()
    assert (report.lost, report.unfinished, report.overlaps) == (0, 0, []), report.line()
    assert report.statuses == {"success": report.acked}, report.line()
    assert report.illegal == {}, report.illegal
    # the stream: events from every replica, through at least one move, none missed
    assert report.sse_events > report.acked and report.sse_moves >= 1, report.line()
    assert (report.sse_gaps, report.sse_duplicates, report.sse_out_of_order) == (0, 0, 0)
    assert report.bad_exits == 0, report.line()
    # the kills did land on running jobs, which the survivors ran again
    assert report.interrupted_runs >= 1, report.line()
