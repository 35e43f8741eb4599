"""The benchmark's CPU reading (scripts/benchlib/cpu.py) against a real process: CPU
spent by a thread named sidetask-writer is the writer's, a thread that ended is "other", CPU
spent by a child process is that child's (by its name), CPU of a child that ended and was
waited for is counted too, and none of it is the main thread's."""

from __future__ import annotations

import select
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib import cpu  # noqa: E402

#: each part burns this much CPU of its own (measured by its own clock, not by time)
SPIN = 0.3

PROGRAM = textwrap.dedent(
    f"""
    import ctypes, subprocess, sys, threading, time

    libc = ctypes.CDLL(None)

    def spin(clock):
        while clock() < {SPIN}:
            pass

    spun, finish = threading.Event(), threading.Event()

    def writer():
        libc.prctl(15, b"sidetask-writer", 0, 0, 0)  # PR_SET_NAME
        spin(time.thread_time)
        spun.set()
        finish.wait()  # alive when the test reads it, as the server's writer is

    def reader():  # a thread that ends before the reading: its CPU is "other"
        libc.prctl(15, b"bench-reader", 0, 0, 0)
        spin(time.thread_time)

    CHILD = (
        "import ctypes, sys, time\\n"
        "ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)\\n"
        "while time.process_time() < {SPIN}: pass\\n"
        "print('spun', flush=True)\\n"
        "sys.stdin.read()\\n"  # alive until the test closes its stdin
    )
    thread = threading.Thread(target=writer)
    thread.start()
    ended_thread = threading.Thread(target=reader)
    ended_thread.start()
    child = subprocess.Popen([sys.executable, "-c", CHILD, "bench-child"], stdout=subprocess.PIPE)
    ended = subprocess.run(
        [sys.executable, "-c", CHILD, "bench-ended"], stdin=subprocess.DEVNULL, capture_output=True
    )
    ended_thread.join()
    spun.wait()
    assert child.stdout.readline() == b"spun\\n"
    print("done", flush=True)
    sys.stdin.read()
    finish.set()
    """
)


def _wait_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"no output within {timeout:g} s"
    return proc.stdout.readline()


def _end(proc: subprocess.Popen[bytes]) -> None:
    """Closes its stdin (the program's cue to exit), waits for it, closes its stdout."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.close()
    try:
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def test_cpu_is_split_into_loop_writer_other_and_children() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", PROGRAM], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        start = cpu.Snapshot(proc.pid, 0.0)  # from the process's start, as cpu_to_ready
        assert _wait_line(proc, 60) == b"done\n"
        window = cpu.between(start, cpu.snapshot(proc.pid), units=2)
    finally:
        _end(proc)
    assert proc.returncode == 0
    floor = SPIN * 0.6 * 1e6  # clock ticks of 10 ms: a few may fall either way
    assert window["writer_threads"] == 1
    assert window["writer_us"] >= floor
    assert window["loop_us"] < window["writer_us"] / 2  # the main thread only waited
    assert window["other_us"] >= floor  # bench-reader, ended
    assert window["children_us"]["bench-child"] >= floor
    assert window["reaped_us"] >= floor  # bench-ended: finished and waited for
    assert set(window["children_us"]) == {"bench-child"}
    assert window["total_us"] == (
        window["loop_us"]
        + window["writer_us"]
        + window["other_us"]
        + sum(window["children_us"].values())
        + window["reaped_us"]
    )
    assert window["per_unit"]["writer_us"] == window["writer_us"] / 2
    text = cpu.describe(window)
    assert text.startswith(f"{window['total_us'] / 2:,.0f} µs = loop ")
    assert "+ writer " in text and "+ child bench-child " in text and "ended children" in text


def test_a_server_without_a_named_writer_is_flagged() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; print('up', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert _wait_line(proc, 30) == b"up\n"
        window = cpu.between(cpu.Snapshot(proc.pid, 0.0), cpu.snapshot(proc.pid))
    finally:
        _end(proc)
    assert window["writer_threads"] == 0
    assert "NO THREAD NAMED sidetask-writer" in cpu.describe(window)
    assert "NO THREAD" not in cpu.describe(window, server=False)


def test_the_stolen_share_is_a_share_of_the_machines_time() -> None:
    """The steal the PostgreSQL rows report: read from /proc/stat's first line, a share
    between 0 and 1 of the machine's time over the window, with time spent in between."""
    steal, total = cpu.machine_times()
    assert 0 <= steal <= total
    stolen = cpu.Stolen()
    stolen.start()
    subprocess.run(
        [sys.executable, "-c", f"import time\nwhile time.process_time() < {SPIN}: pass"],
        check=True,
    )
    assert cpu.machine_times()[1] > total  # the machine's clock moved on
    assert 0.0 <= stolen.share() <= 1.0
