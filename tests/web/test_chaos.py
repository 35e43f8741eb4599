"""The short chaos run, on both stores: real `python -m service serve` processes SIGKILLed
under submission load on loopback (scripts/chaos runs the long one). Nothing acknowledged is lost, everything
acknowledged completes, no task runs in two live processes at once, and every stored status
change is one the transition table allows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.chaos_helpers.chaos import (
    Report,
    StreamComparison,
    analyse,
    analyse_record,
    compare_stream,
    freeze_and_kill,
    run_chaos,
)
from tests.conftest import wait_for

#: a process that appends lines to a file as fast as it can, from two threads
WRITER = """
import os, sys, threading
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
def write():
    while True:
        os.write(fd, b"tick %d\\n" % os.getpid())
threading.Thread(target=write, daemon=True).start()
write()
"""


async def test_sigkills_under_load_lose_nothing_and_never_run_a_task_twice_at_once(
    tmp_path: Path, any_db: Path | str
) -> None:
    """On both stores (`scripts/chaos --postgres` runs the long one on PostgreSQL)."""
    report = await run_chaos(
        tmp_path / "chaos",
        kills=3,
        submitters=6,
        per_server=(15, 30),
        seed=7,
        finish_timeout=30,
        db_url=any_db if isinstance(any_db, str) else None,
    )
    assert report.kills == 3
    assert report.acked >= 45
    assert (report.lost, report.unfinished) == (0, 0), report.line()
    assert report.statuses == {"success": report.acked}, report.line()
    assert report.overlaps == [], report.overlaps
    assert report.illegal == {}, report.illegal
    assert report.success_without_run == 0, report.line()
    # the kills did land on running jobs
    assert report.interrupted_runs >= 1, report.line()


def test_the_record_check_finds_a_run_started_while_another_is_alive(tmp_path: Path) -> None:
    """The overlap check reads the record by its order alone: a run is alive from its start
    to its end, or to the `dead` line of its process."""
    record = tmp_path / "runs.log"
    record.write_text(
        "start 1 100 0\n"
        "dead 100\n"
        "start 1 200 1\n"  # after the death: a restore, not an overlap
        "end 1 200 1\n"
        "start 2 200 0\n"
        "start 2 300 0\n"  # 2 is still alive in 200
        "end 2 200 0\n"
        "end 2 300 0\n"
    )
    overlaps, interrupted, ended = analyse_record(record)
    assert len(overlaps) == 1 and "task 2 started in pid 300" in overlaps[0]
    assert interrupted == 1
    assert ended == {1: 1, 2: 2}


def test_a_run_its_process_stopped_is_over_at_its_stop_line(tmp_path: Path) -> None:
    """A run stopped in its process (a replica that gave its jobs up) writes `stop`: a start
    after that line is no overlap; one before it is."""
    record = tmp_path / "runs.log"
    record.write_text(
        "start 1 100 0\n"
        "stop 1 100 0\n"
        "start 1 200 1\n"  # after the stop: no overlap
        "start 2 100 0\n"
        "start 2 200 0\n"  # before 100's stop: an overlap
        "stop 2 100 0\n"
        "end 1 200 1\n"
        "end 2 200 0\n"
    )
    found = analyse(record)
    assert len(found.overlaps) == 1 and "task 2 started in pid 200" in found.overlaps[0]
    assert (found.stopped, found.interrupted, found.ended) == (2, 0, {1: 1, 2: 1})


def test_the_stream_check_finds_a_gap_a_repeat_a_step_back_and_a_stranger() -> None:
    assert compare_stream([1, 2, 3, 5], [1, 2, 3, 5]) == StreamComparison(0, 0, 0, 0)
    # 5 never came, 4 came twice, 3 after 4, 9 is not stored
    assert compare_stream([1, 2, 4, 4, 3, 9], [1, 2, 3, 4, 5]) == StreamComparison(1, 1, 1, 1)


def test_a_replicas_run_is_not_ok_when_the_stream_missed_anything() -> None:
    assert Report(replicas=3, sse_events=10).ok
    assert not Report(replicas=3).ok  # a stream that received nothing shows nothing
    wrongs = (
        "sse_gaps",
        "sse_duplicates",
        "sse_out_of_order",
        "sse_unstored",
        "bad_exits",
        "deadlocks",
    )
    for wrong in wrongs:
        report = Report(replicas=3, sse_events=10)
        setattr(report, wrong, 1)
        assert not report.ok, wrong
        assert f"{wrong}=1" in report.line()


def start_writer(record: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(record)])


async def test_a_killed_process_writes_nothing_after_its_dead_line(tmp_path: Path) -> None:
    """The kill freezes the process, and waits until it is stopped, before the `dead` line:
    a process writing all the time has no line after it."""
    record = tmp_path / "runs.log"
    writer = start_writer(record)
    try:

        async def writing() -> bool:
            return record.exists() and record.stat().st_size > 100_000

        await wait_for(writing, 10, "the writer to write")
        await freeze_and_kill(writer, record)
    finally:
        writer.kill()
        writer.wait(10)
    lines = record.read_bytes().splitlines()
    assert lines[-1] == f"dead {writer.pid}".encode()
    assert lines.count(lines[-1]) == 1
