"""Reads and start-up with many tasks stored (benchlib.dataset builds the file).

Start-up: the server is started on the file; the time from the process's start to its
first 200 on /ready (polled every 2 ms), then its RSS after a second idle. Then three
reads, each with wrk for a while at two loads: 64 connections (2 threads; the most it
serves) and 4 connections (1 thread; latency when it is not saturated, where the targets
are judged). RSS is sampled all along; the peak is the kernel's VmHWM for the process.

- get: GET …/tasks/{id}, the id drawn uniformly from every stored task by wrk's Lua;
- list: GET …/tasks?status=success&limit=100 (the first page);
- deep page: the same with `page` = the token for an id 1% from the end (made by the
  service's own encode_page), checked once to answer 100 tasks after that id.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from service.web.params import encode_page

from . import wrk
from .server import BenchServer, RssSampler

BASE = "/graphs/hugegraph/tasks"


def _check(url: str, after: int | None = None) -> None:
    with urllib.request.urlopen(url, timeout=30) as response:
        body = json.loads(response.read())
    tasks = body["tasks"]
    if len(tasks) != 100 or any(t["task_status"] != "success" for t in tasks):
        raise RuntimeError(f"{url}: expected 100 success tasks, got {len(tasks)}")
    if after is not None and (tasks[0]["id"] <= after or not body.get("page")):
        raise RuntimeError(f"{url}: the page does not start after {after} or has no next token")


def run_reads(
    db: Path,
    last_id: int,
    seconds: int,
    *,
    reads: bool = True,
    warmup: bool = True,
    settle: float = 1.0,
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    with BenchServer(db=db) as server:
        result["ready_s"] = server.ready_seconds
        result["cpu_to_ready"] = server.cpu_to_ready
        time.sleep(settle)
        result["rss_idle_mb"] = server.rss_mb()
        if reads:
            deep_after = last_id - max(1000, last_id // 100)
            token = encode_page(deep_after)
            targets = {
                "get": (f"{server.url}{BASE}/1", wrk.random_get_script(f"{BASE}/", 1, last_id)),
                "list": (f"{server.url}{BASE}?status=success&limit=100", ""),
                "deep_page": (f"{server.url}{BASE}?status=success&limit=100&page={token}", ""),
            }
            _check(targets["list"][0])
            _check(targets["deep_page"][0], deep_after)
            result["deep_page_after_id"] = deep_after
            with RssSampler(server.pid) as sampler:
                for name, (url, script) in targets.items():
                    if warmup:  # one second, not counted
                        wrk.run(url, script, seconds=1, connections=64, threads=2)
                    result[name] = {}
                    for key, connections, threads in (("c64", 64, 2), ("c4", 4, 1)):
                        with server.cpu_window() as cpu:
                            run = wrk.run(
                                url,
                                script,
                                seconds=seconds,
                                connections=connections,
                                threads=threads,
                            )
                        result[name][key] = {
                            **run.as_dict(),
                            "server_cpu": cpu.result(run.requests),
                        }
            result["rss_sampled_peak_mb"] = sampler.peak
        result["rss_peak_mb"] = server.peak_rss_mb()
    return result
