"""The `sidetask` command: `serve` runs the service; the other commands talk to a running one.

    sidetask serve [--port 8080] [--db FILE] [--config FILE] [--log-format text|json] [--insecure]
    sidetask hash-password NAME      (a line for [users])
    sidetask new-token NAME          (a token, and a line for [tokens])
    sidetask submit TYPE [--input JSON | --input-file F] [--name N] [--priority P]
                         [--max-retries R] [--timeout S] [--delay S] [--watch]
    sidetask ls [--status S] [--limit N]
    sidetask get ID
    sidetask cancel|pause|resume|retry ID
    sidetask delete ID [--force]
    sidetask watch [ID]

Every client command takes --url (SIDETASK_URL), --user/--password (SIDETASK_USER,
SIDETASK_PASSWORD: HTTP Basic) or --token (SIDETASK_TOKEN: Bearer), --graph
(SIDETASK_GRAPH: `graphspace/graph` or `graph`; default DEFAULT/hugegraph) and --json.

Exit codes: 0 done; `watch`: 1 the task failed, 2 it was cancelled; 2 a usage error;
3 the server answered with an error (its message is printed); 4 the server could not be
reached; 130 interrupted.

The package: parser.py builds the arguments, commands.py runs each command on a
service.client.Client, render.py writes tables, details and errors, watch.py follows
event streams.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .. import config
from ..errors import SidetaskError
from .exits import EXIT_USAGE, UsageError
from .parser import build_parser

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except config.ConfigError as exc:
        print(f"sidetask: configuration error: {exc}", file=sys.stderr)
        return 2
    except SidetaskError as exc:
        print(f"sidetask: {exc.message}", file=sys.stderr)
        return 1
    except UsageError as exc:
        parser.error(str(exc))
        return EXIT_USAGE  # not reached: parser.error exits
