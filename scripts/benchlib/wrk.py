"""wrk (Debian's package) driven by a Lua script; its `done` hook writes the figures as JSON."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Any

from .server import work_dir

MARK = "BENCH-JSON "

#: appended to every script: requests, duration, errors and latency percentiles as one line
DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%f}\n',
    "BENCH-JSON ", summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""


def post_script(body: str) -> str:
    """Every request a POST of `body` as JSON."""
    return (
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )


def random_get_script(path_prefix: str, first: int, last: int) -> str:
    """GET path_prefix..ID with ID drawn uniformly from first..last, a seed per thread."""
    return (
        "local counter = 0\n"
        "setup = function(thread) counter = counter + 1; thread:set('seed', counter) end\n"
        "init = function(args) math.randomseed(os.time() * 1000 + seed) end\n"
        "request = function()\n"
        f"  return wrk.format('GET', {json.dumps(path_prefix)} .. math.random({first}, {last}))\n"
        "end\n"
    )


def get_script() -> str:
    return ""


@dataclass
class WrkResult:
    connections: int
    threads: int
    seconds: float
    requests: int
    duration_s: float
    errors: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "threads": self.threads,
            "seconds": self.seconds,
            "requests": self.requests,
            "requests_per_s": round(self.rps, 1),
            "errors": self.errors,
            "p50_ms": round(self.p50_ms, 3),
            "p90_ms": round(self.p90_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "max_ms": round(self.max_ms, 3),
            "mean_ms": round(self.mean_ms, 3),
        }


def available() -> bool:
    return shutil.which("wrk") is not None


def version() -> str:
    if not available():
        return "missing"
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0].split(" [")[0].removeprefix("wrk ") if text else "unknown"


def run(url: str, script: str, *, seconds: float, connections: int, threads: int) -> WrkResult:
    """`wrk --latency` for `seconds` against `url` (loopback only) with `script`."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"load goes to 127.0.0.1 only, not {url}")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", dir=work_dir(), delete=False) as handle:
        handle.write(script + DONE)
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        handle.name,
        url,
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith(MARK)), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout}\n{out.stderr}")
    data = json.loads(line[len(MARK) :])
    return WrkResult(
        connections=connections,
        threads=threads,
        seconds=seconds,
        requests=data["requests"],
        duration_s=data["duration_us"] / 1e6,
        errors={k: data[k] for k in ("connect", "read", "write", "status", "timeout") if data[k]},
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        mean_ms=data["mean_us"] / 1000,
    )
