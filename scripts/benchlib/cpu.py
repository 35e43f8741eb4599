"""Server CPU from /proc, split by thread and by child process, over a measured window.

A snapshot reads utime + stime (clock ticks) of the server process (/proc/PID/stat: every
thread it has had, live or gone), of each of its threads (/proc/PID/task/TID/stat), and of
every descendant process (found by their parent ids in /proc/*/stat), with each one's
comm. The difference of two snapshots is split into:

- loop: the main thread (TID = PID), where the event loop runs;
- writer: threads named `sidetask-writer` (the store's writer sets that name at the OS
  level);
- other: the rest of the server process (aiosqlite readers, job threads, threads that
  ended during the window);
- children: each descendant process, by its comm (summed when several share one), and
  `reaped` for descendants that ended and were waited for during the window (their
  parent's cutime + cstime).

Figures are µs; a tick is 1/SC_CLK_TCK s (10 ms on most kernels), so a window should hold
a few hundred ticks or more for a steady figure.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WRITER = "sidetask-writer"
TICK_US = 1_000_000 / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Stat:
    comm: str
    ppid: int
    #: utime + stime: the process's (or thread's) own CPU
    own: int
    #: cutime + cstime: its children that ended and were waited for
    reaped: int


def read_stat(path: str | Path) -> Stat | None:
    try:
        text = Path(path).read_text()
    except OSError:  # gone meanwhile
        return None
    head, _, tail = text.rpartition(")")
    fields = tail.split()
    comm = head.partition("(")[2]
    return Stat(
        comm=comm,
        ppid=int(fields[1]),
        own=int(fields[11]) + int(fields[12]),
        reaped=int(fields[13]) + int(fields[14]),
    )


@dataclass(frozen=True)
class Snapshot:
    pid: int
    taken: float
    #: the server process and its descendants by pid
    procs: dict[int, Stat] = field(default_factory=dict)
    #: the server process's threads by tid
    threads: dict[int, Stat] = field(default_factory=dict)


def _descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        stat = read_stat(f"/proc/{entry.name}/stat")
        if stat is not None:
            parents.setdefault(stat.ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found.extend(children)
        todo.extend(children)
    return found


def snapshot(pid: int) -> Snapshot:
    """The CPU counters of process `pid`, its threads and its descendants now."""
    snap = Snapshot(pid, time.monotonic())
    root = read_stat(f"/proc/{pid}/stat")
    if root is None:
        return snap
    snap.procs[pid] = root
    try:
        tids = [int(name) for name in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tids = []
    for tid in tids:
        stat = read_stat(f"/proc/{pid}/task/{tid}/stat")
        if stat is not None:
            snap.threads[tid] = stat
    for child in _descendants(pid):
        stat = read_stat(f"/proc/{child}/stat")
        if stat is not None:
            snap.procs[child] = stat
    return snap


def _delta(before: dict[int, Stat], after: dict[int, Stat], key: int) -> int:
    """Own ticks of `key` during the window: all of them when it started within it."""
    now = after[key].own
    then = before[key].own if key in before else 0
    return max(0, now - then)


def between(before: Snapshot, after: Snapshot, units: int | None = None) -> dict[str, Any]:
    """The CPU used from `before` to `after`, in µs, split; with `units` (tasks, requests)
    also per unit (`per_unit`). `cores`: CPU seconds per wall second."""
    pid = after.pid
    if pid not in after.procs:
        raise RuntimeError(f"process {pid} was gone when its CPU was read")
    total = _delta(before.procs, after.procs, pid)
    loop = _delta(before.threads, after.threads, pid) if pid in after.threads else 0
    writers = [t for t, s in after.threads.items() if s.comm == WRITER]
    writer = sum(_delta(before.threads, after.threads, t) for t in writers)
    children: dict[str, int] = {}
    for child in after.procs:
        if child != pid:
            comm = after.procs[child].comm
            children[comm] = children.get(comm, 0) + _delta(before.procs, after.procs, child)
    # descendants that ended: their time (and their own reaped children's) moved into their
    # parent's cutime/cstime; what they had used before the window is not this window's
    reaped = sum(
        s.reaped - (before.procs[p].reaped if p in before.procs else 0)
        for p, s in after.procs.items()
    ) - sum(s.own + s.reaped for p, s in before.procs.items() if p not in after.procs)
    reaped = max(0, reaped)
    other = max(0, total - loop - writer)
    all_ticks = total + sum(children.values()) + reaped
    seconds = after.taken - before.taken
    result: dict[str, Any] = {
        "seconds": seconds,
        "total_us": all_ticks * TICK_US,
        "loop_us": loop * TICK_US,
        "writer_us": writer * TICK_US,
        "other_us": other * TICK_US,
        "children_us": {c: t * TICK_US for c, t in children.items()},
        "reaped_us": reaped * TICK_US,
        "cores": all_ticks * TICK_US / 1e6 / seconds if seconds > 0 else float("nan"),
        "writer_threads": len(writers),
        "tick_us": TICK_US,
    }
    if units:
        result["units"] = units
        result["per_unit"] = per_unit(result, units)
    return result


def per_unit(window: dict[str, Any], units: int) -> dict[str, Any]:
    """The window's µs figures divided by `units`."""
    return {
        "total_us": window["total_us"] / units,
        "loop_us": window["loop_us"] / units,
        "writer_us": window["writer_us"] / units,
        "other_us": window["other_us"] / units,
        "children_us": {c: us / units for c, us in window["children_us"].items()},
        "reaped_us": window["reaped_us"] / units,
    }


def machine_times() -> tuple[int, int]:
    """(steal, total) clock ticks of the whole machine since boot (/proc/stat's `cpu`
    line): steal is time the hypervisor gave this machine's cores to someone else."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # user nice system idle iowait irq softirq steal (guest and guest_nice are in user)
    return fields[7] if len(fields) > 7 else 0, sum(fields[:8])


class Stolen:
    """The share of the machine's CPU time the hypervisor took between start() and
    share(): a window with much of it ran on slower cores than one without."""

    def __init__(self) -> None:
        self._before = (0, 0)

    def start(self) -> None:
        self._before = machine_times()

    def share(self) -> float:
        steal, total = machine_times()
        spent = total - self._before[1]
        return (steal - self._before[0]) / spent if spent > 0 else 0.0


class Window:
    """`with Window(pid) as w: …` (or `w.start()` … `w.stop()`), then `w.result(units)`:
    the CPU of the block."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before: Snapshot | None = None
        self.after: Snapshot | None = None

    def start(self) -> Window:
        self.before = snapshot(self.pid)
        return self

    def stop(self) -> None:
        self.after = snapshot(self.pid)

    def __enter__(self) -> Window:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def result(self, units: int | None = None) -> dict[str, Any]:
        assert self.before is not None and self.after is not None
        return between(self.before, self.after, units)


def _figure(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def describe(window: dict[str, Any], *, server: bool = True, main: str = "loop") -> str:
    """`1,480 µs = loop 600 + writer 830 + other 50; 0.90 cores`: per unit when the window
    has units, else the whole window in ms. `server`: the process is sidetask's (its
    writer is named, and said to be missing when no thread or child carries its name);
    `main`: what the main thread is called."""
    p = window.get("per_unit")
    scale, suffix = 1.0, "µs"
    if p is None:
        p, scale, suffix = window, 1e-3, "ms"

    def f(key: str) -> str:
        return _figure(p[key] * scale)

    parts = [f"{main} {f('loop_us')}"]
    if server:
        parts.append(f"writer {f('writer_us')}")
    parts.append(f"other {f('other_us')}")
    parts += [f"child {c} {_figure(us * scale)}" for c, us in sorted(p["children_us"].items())]
    if p["reaped_us"]:
        parts.append(f"ended children {f('reaped_us')}")
    text = f"{f('total_us')} {suffix} = {' + '.join(parts)}; {window['cores']:.2f} cores"
    if server and not window["writer_threads"] and WRITER not in window["children_us"]:
        text += f" (NO THREAD NAMED {WRITER})"
    return text


def main() -> None:
    """`python -m benchlib.cpu PID [SECONDS]`: one window of a running process, printed."""
    import json
    import sys

    pid = int(sys.argv[1])
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
    with Window(pid) as window:
        time.sleep(seconds)
    print(json.dumps(window.result(), indent=2))


if __name__ == "__main__":
    main()
