"""A command for command-job tests, one behaviour per first argument:

args A B …             prints its arguments, one per line, as it received them, then
                       its working directory and $CMD_GREETING
progress N HOLD        prints `progress: 1` … `progress: N` with an output line after
                       each, then waits until the file HOLD exists and exits 0
exit CODE              writes a line to stdout and one to stderr, exits with CODE
stubborn PIDS          ignores SIGTERM, starts a child in its process group (which
                       ignores it too), writes both pids to PIDS, reports progress 1,
                       and waits forever
forever PIDS           writes its pid to PIDS (appending a line), reports progress 1,
                       and waits forever (SIGTERM ends it)
flood BYTES            writes BYTES bytes of numbered lines, then `last line`
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def say(text: str, stream=sys.stdout) -> None:
    print(text, file=stream, flush=True)


def wait_forever() -> None:
    while True:
        signal.pause()


def main(argv: list[str]) -> int:
    mode, rest = argv[0], argv[1:]
    if mode == "args":
        for arg in rest:
            say(f"arg={arg}")
        say(f"cwd={os.getcwd()}")
        say(f"greeting={os.environ.get('CMD_GREETING', '')}")
        return 0
    if mode == "progress":
        steps, hold = int(rest[0]), Path(rest[1])
        for step in range(1, steps + 1):
            say(f"progress: {step}")
            say(f"did step {step}")
        while not hold.exists():
            time.sleep(0.01)
        return 0
    if mode == "exit":
        say("about to fail")
        say("something went wrong", sys.stderr)
        return int(rest[0])
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: signal.pause()",
            ]
        )
        Path(rest[0]).write_text(f"{os.getpid()}\n{child.pid}\n")
        say("progress: 1")
        wait_forever()
    if mode == "forever":
        with Path(rest[0]).open("a") as pids:
            pids.write(f"{os.getpid()}\n")
        say("progress: 1")
        wait_forever()
    if mode == "flood":
        total, written, n = int(rest[0]), 0, 0
        while written < total:
            line = f"line {n:08d} " + "x" * 50
            sys.stdout.write(line + "\n")
            written += len(line) + 1
            n += 1
        say("last line")
        return 0
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
