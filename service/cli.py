"""The `sidetask` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from . import config
from .errors import SidetaskError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sidetask", description="An async task service with a HugeGraph-compatible Task API."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the service")
    serve.add_argument("--host", help="address to bind (default from the configuration: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 8080)")
    serve.add_argument("--db", help="the SQLite database file (default var/sidetask.db)")
    serve.add_argument("--config", metavar="FILE", help="a TOML file of settings")
    serve.set_defaults(run=_serve)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from .server import serve

    settings = config.load(args.config, host=args.host, port=args.port, db=args.db)
    return serve(settings)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except config.ConfigError as exc:
        print(f"sidetask: configuration error: {exc}", file=sys.stderr)
        return 2
    except SidetaskError as exc:
        print(f"sidetask: {exc.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
