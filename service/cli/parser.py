"""The sidetask command's arguments: one subcommand each, the connection options on every
client command (before or after its name)."""

from __future__ import annotations

import argparse

from . import commands


def _connection_options() -> argparse.ArgumentParser:
    """Options of every client command, accepted before or after the command's name (the
    defaults are SUPPRESS so a value given before is not reset by the subcommand)."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("server")
    group.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help="the server (SIDETASK_URL; default http://127.0.0.1:8080)",
    )
    group.add_argument("--user", default=argparse.SUPPRESS, help="HTTP Basic user (SIDETASK_USER)")
    group.add_argument(
        "--password", default=argparse.SUPPRESS, help="HTTP Basic password (SIDETASK_PASSWORD)"
    )
    group.add_argument("--token", default=argparse.SUPPRESS, help="Bearer token (SIDETASK_TOKEN)")
    group.add_argument(
        "--graph",
        default=argparse.SUPPRESS,
        help="graphspace/graph, or graph in graphspace DEFAULT (SIDETASK_GRAPH; default DEFAULT/hugegraph)",
    )
    group.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON for scripts"
    )
    return common


def _task_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a task id is a positive integer, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"a task id is a positive integer, not {text!r}")
    return value


def _filter_options(parser: argparse.ArgumentParser) -> None:
    """The list's filter beside --status and --type (GET …/tasks's terms)."""
    parser.add_argument("--name", metavar="PREFIX", help="only tasks whose name starts with this")
    when = "epoch milliseconds or ISO-8601 (UTC without an offset)"
    for option, text in (
        ("--created-from", f"only tasks created at or after this time: {when}"),
        ("--created-to", "only tasks created before this time"),
        ("--updated-from", "only tasks last changed at or after this time"),
        ("--updated-to", "only tasks last changed before this time"),
    ):
        parser.add_argument(option, metavar="TIME", help=text)


def build_parser() -> argparse.ArgumentParser:
    common = _connection_options()
    parser = argparse.ArgumentParser(
        prog="sidetask",
        description="An async task service with a HugeGraph-compatible Task API.",
        parents=[common],
        epilog="Exit codes: 0 done; watch: 1 failed, 2 cancelled; 2 usage error; "
        "3 the server (or, for migrate and copy-db, the database) answered with an error; "
        "4 the server could not be reached.",
    )
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = subcommands.add_parser("serve", help="run the service")
    serve.add_argument("--host", help="address to bind (default from the configuration: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 8080)")
    serve.add_argument(
        "--db",
        help="the SQLite database file (default var/sidetask.db), or a PostgreSQL URL "
        "postgresql://user:password@host/database",
    )
    serve.add_argument("--config", metavar="FILE", help="a TOML file of settings")
    serve.add_argument(
        "--import-path",
        action="append",
        metavar="DIR",
        help="a directory your job modules are imported from, before the others (repeatable; "
        "import_paths)",
    )
    serve.add_argument(
        "--log-format", choices=("text", "json"), help="log lines as text (default) or JSON objects"
    )
    serve.add_argument("--log-level", help="DEBUG, INFO (default), WARNING, ERROR")
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="bind an address other than loopback without users or tokens configured",
    )
    serve.set_defaults(run=commands.serve)

    migrate = subcommands.add_parser(
        "migrate",
        help="bring the database to this version's schema (serve also does, at its start)",
        description="Applies the schema migrations this version has and the database lacks, "
        "and prints the version in force. PostgreSQL: safe while replicas run (under a lock); "
        "a database newer than this version is refused.",
    )
    migrate.add_argument("--db", help="as for serve (default from the configuration)")
    migrate.add_argument("--config", metavar="FILE", help="a TOML file of settings")
    migrate.set_defaults(run=commands.migrate)

    copy_db = subcommands.add_parser(
        "copy-db",
        help="copy a SQLite database's tasks and events into PostgreSQL (ids kept)",
        description="Moves a single node's history to a PostgreSQL schema for several "
        "replicas: every task and event, with their ids, so task ids and Last-Event-IDs keep "
        "their meaning, and their attempts, logs, dependencies and webhook deliveries, the "
        "schedules, paused types and rate windows. Stop the service first (the file is "
        "locked while one runs); the schema must be empty. One transaction: a copy that "
        "fails copies nothing.",
    )
    copy_db.add_argument("--from", dest="source", required=True, metavar="FILE")
    copy_db.add_argument("--to", dest="target", required=True, metavar="URL")
    copy_db.add_argument("--schema", default="sidetask", help="the PostgreSQL schema (db_schema)")
    copy_db.set_defaults(run=commands.copy_db)

    hash_password = subcommands.add_parser(
        "hash-password",
        help="print a salted hash of a password, for the users setting",
        description="Reads the password (twice on a terminal, else one line of standard "
        'input) and prints `NAME = "pbkdf2_sha256$…"`, a line for [users].',
    )
    hash_password.add_argument("name", metavar="NAME", help="the user's name")
    hash_password.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="PBKDF2 iterations (default 600000; more is slower to check and to guess)",
    )
    hash_password.set_defaults(run=commands.hash_password)

    new_token = subcommands.add_parser(
        "new-token",
        help="make a Bearer token: prints it, and its hash for the tokens setting",
    )
    new_token.add_argument("name", metavar="NAME", help="the token's name (used in grants)")
    new_token.set_defaults(run=commands.new_token)

    submit = subcommands.add_parser("submit", parents=[common], help="submit a job")
    submit.add_argument(
        "type", metavar="TYPE", help="the job type: sleep, echo, fail, gremlin, or one of yours"
    )
    source = submit.add_mutually_exclusive_group()
    source.add_argument("--input", metavar="JSON", help="the job's input, a JSON object")
    source.add_argument(
        "--input-file", metavar="FILE", help="read the input from FILE (- for standard input)"
    )
    submit.add_argument("--name", help="the task's name (default: its type)")
    submit.add_argument("--priority", type=int, help="higher runs first (default 0)")
    submit.add_argument("--max-retries", type=int, help="re-runs after a failure")
    submit.add_argument("--timeout", type=float, help="seconds the job may run")
    when = submit.add_mutually_exclusive_group()
    when.add_argument("--delay", type=float, help="seconds before it may start")
    when.add_argument(
        "--run-at",
        metavar="TIME",
        help="when it may start: ISO-8601 with an offset (2026-12-01T09:00:00+01:00, …Z) or "
        "epoch milliseconds",
    )
    submit.add_argument("--idempotency-key", help="the same key returns the first task's id")
    submit.add_argument(
        "--after",
        metavar="ID",
        type=_task_id,
        nargs="+",
        action="extend",
        default=[],
        help="task ids it waits for: it runs once each one succeeded (task_dependencies)",
    )
    submit.add_argument(
        "--watch", action="store_true", help="then watch it to its end (exit code as for watch)"
    )
    submit.add_argument(
        "--total", type=int, help="with --watch: the progress value that means done"
    )
    submit.set_defaults(run=commands.submit)

    ls = subcommands.add_parser("ls", parents=[common], help="list a graph's tasks, newest first")
    ls.add_argument("--status", help="only this status (case-insensitive)")
    ls.add_argument("--type", dest="task_type", metavar="TYPE", help="only tasks of this job type")
    ls.add_argument(
        "--limit", type=int, default=100, help="at most this many (default 100; -1: all)"
    )
    order = ls.add_mutually_exclusive_group()
    order.add_argument(
        "--order",
        choices=["desc", "asc"],
        default="desc",
        help="desc: newest first (default); asc: oldest first, the API's order",
    )
    order.add_argument(
        "--oldest-first", dest="order", action="store_const", const="asc", help="--order asc"
    )
    _filter_options(ls)
    ls.set_defaults(run=commands.ls)

    get = subcommands.add_parser("get", parents=[common], help="show one task")
    get.add_argument("id", type=_task_id, metavar="ID")
    get.set_defaults(run=commands.get)

    attempts = subcommands.add_parser(
        "attempts", parents=[common], help="show each run of a task: how it ended, where, its error"
    )
    attempts.add_argument("id", type=_task_id, metavar="ID")
    attempts.add_argument(
        "--traceback", action="store_true", help="also each failed run's traceback"
    )
    attempts.set_defaults(run=commands.attempts)

    deliveries = subcommands.add_parser(
        "deliveries",
        parents=[common],
        help="show a task's webhook deliveries: each hook or callback, its state, its last answer",
    )
    deliveries.add_argument("id", type=_task_id, metavar="ID")
    deliveries.set_defaults(run=commands.deliveries)

    logs = subcommands.add_parser(
        "logs", parents=[common], help="show a task's log lines; -f: follow them as they come"
    )
    logs.add_argument("id", type=_task_id, metavar="ID")
    logs.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="print new lines as they come, until the task ends",
    )
    logs.add_argument(
        "--level",
        choices=["debug", "info", "warning", "error"],
        default="debug",
        help="lines of this level or above (default: all)",
    )
    logs.set_defaults(run=commands.logs)

    for action, text in (
        ("cancel", "cancel a task (a running one goes cancelling, then cancelled)"),
        ("pause", "pause a task that has not started running"),
        ("resume", "resume a paused task"),
        ("retry", "run a failed or cancelled task again"),
    ):
        command = subcommands.add_parser(action, parents=[common], help=text)
        command.add_argument("id", type=_task_id, metavar="ID")
        command.set_defaults(run=commands.act, action=action)

    delete = subcommands.add_parser("delete", parents=[common], help="delete a task's record")
    delete.add_argument("id", type=_task_id, metavar="ID")
    delete.add_argument(
        "--force", action="store_true", help="delete an incomplete task too (its job runs on)"
    )
    delete.set_defaults(run=commands.delete)

    bulk = subcommands.add_parser(
        "bulk",
        parents=[common],
        help="cancel, pause, resume, retry or delete every task a filter matches",
        description="Acts on every task of the graph that the filter matches (as `ls` takes "
        "it), after showing how many and asking (--yes: without asking).",
    )
    bulk.add_argument("action", choices=["cancel", "pause", "resume", "retry", "delete"])
    bulk.add_argument("--status", help="only this status, or several: new,queued")
    bulk.add_argument(
        "--type", dest="task_type", metavar="TYPE", help="only tasks of this job type"
    )
    _filter_options(bulk)
    bulk.add_argument(
        "--all", dest="every", action="store_true", help="every task of the graph (no filter)"
    )
    bulk.add_argument(
        "--force", action="store_true", help="with delete: incomplete tasks too (their jobs run on)"
    )
    bulk.add_argument("-y", "--yes", action="store_true", help="act without asking")
    bulk.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds to wait for the service to finish (default 600)",
    )
    bulk.set_defaults(run=commands.bulk)

    schedules = subcommands.add_parser(
        "schedules",
        parents=[common],
        help="list a graph's schedules with their next fire times; add, get, pause, resume, delete",
    )
    schedules.set_defaults(run=commands.schedules, schedule_command="list")
    each = schedules.add_subparsers(dest="schedule_command", metavar="ACTION")
    each.add_parser("list", parents=[common], help="the graph's schedules (the default)")
    add = each.add_parser(
        "add", parents=[common], help="a new schedule: a job at the times of a cron or every S s"
    )
    add.add_argument("name", metavar="NAME", help="the schedule's name (its tasks link to it)")
    add.add_argument("type", metavar="TYPE", help="the job type it submits")
    times = add.add_mutually_exclusive_group(required=True)
    times.add_argument("--cron", metavar="EXPR", help="'MIN HOUR DAY MONTH WEEKDAY' or @daily, …")
    times.add_argument("--every", type=float, metavar="S", help="every S seconds (at least 1)")
    add.add_argument("--timezone", metavar="TZ", help="of --cron: an IANA name (default UTC)")
    add.add_argument("--input", metavar="JSON", help="the job's input, a JSON object")
    add.add_argument("--task-name", help="its tasks' name (default: the schedule's name)")
    add.add_argument("--priority", type=int, help="its tasks' priority")
    add.add_argument("--max-retries", type=int, help="its tasks' re-runs after a failure")
    add.add_argument("--timeout", type=float, help="seconds each of its jobs may run")
    add.add_argument(
        "--missed",
        choices=["once", "skip"],
        help="fire times missed while the service was down: one task, or none (default once)",
    )
    add.add_argument("--paused", action="store_true", help="made paused: it fires once resumed")
    for action, text in (
        ("get", "show one schedule"),
        ("pause", "pause a schedule: it fires nothing"),
        ("resume", "resume a schedule: it fires from its next fire time after now"),
        ("delete", "delete a schedule (its tasks stay)"),
    ):
        one = each.add_parser(action, parents=[common], help=text)
        one.add_argument("name", metavar="NAME")

    job_types = subcommands.add_parser(
        "types",
        parents=[common],
        help="list the job types and which are paused; pause or resume a whole type",
    )
    job_types.set_defaults(run=commands.job_types, type_command="list")
    type_actions = job_types.add_subparsers(dest="type_command", metavar="ACTION")
    type_actions.add_parser("list", parents=[common], help="the job types (the default)")
    for action, text in (
        ("pause", "pause a type: nothing new of it starts anywhere; its running jobs finish"),
        ("resume", "resume a paused type"),
    ):
        one = type_actions.add_parser(action, parents=[common], help=text)
        one.add_argument("type", metavar="TYPE")

    watch = subcommands.add_parser(
        "watch",
        parents=[common],
        help="follow a task to its end (exit 0 success, 1 failed, 2 cancelled), or without ID a graph's tasks",
    )
    watch.add_argument("id", type=_task_id, metavar="ID", nargs="?")
    watch.add_argument(
        "--total",
        type=int,
        help="the progress value that means done (default: the input's total or steps)",
    )
    watch.add_argument("--status", help="without ID: only events of tasks in this status")
    watch.add_argument("--type", help="without ID: only tasks of this type")
    watch.add_argument("--limit", type=int, default=20, help="without ID: rows shown (default 20)")
    watch.set_defaults(run=commands.watch)
    return parser
