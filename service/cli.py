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
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from typing import Any

import orjson
from rich.markup import escape

from . import config, jsontext
from .errors import SidetaskError
from .model import UNFINISHED_STATUSES, Status

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CANCELLED = 2
EXIT_USAGE = 2
EXIT_ERROR = 3
EXIT_UNREACHABLE = 4
EXIT_INTERRUPTED = 130

#: the statuses `watch` lists the tasks of when it starts (service.model.UNFINISHED_STATUSES),
#: in the order they go through them
WATCHED_STATUSES = tuple(s.value for s in Status if s in UNFINISHED_STATUSES)
#: the width of tables written to a pipe or a file
PIPE_WIDTH = 200
STATUS_STYLES = {
    "success": "green",
    "failed": "bold red",
    "cancelled": "yellow",
    "cancelling": "yellow",
    "running": "cyan",
    "pending": "magenta",
    "unknown": "red",
}


# --- the parser ---


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


def build_parser() -> argparse.ArgumentParser:
    common = _connection_options()
    parser = argparse.ArgumentParser(
        prog="sidetask",
        description="An async task service with a HugeGraph-compatible Task API.",
        parents=[common],
        epilog="Exit codes: 0 done; watch: 1 failed, 2 cancelled; 2 usage error; "
        "3 the server answered with an error; 4 the server could not be reached.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the service")
    serve.add_argument("--host", help="address to bind (default from the configuration: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 8080)")
    serve.add_argument("--db", help="the SQLite database file (default var/sidetask.db)")
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
    serve.set_defaults(run=_serve)

    hash_password = commands.add_parser(
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
    hash_password.set_defaults(run=_hash_password)

    new_token = commands.add_parser(
        "new-token",
        help="make a Bearer token: prints it, and its hash for the tokens setting",
    )
    new_token.add_argument("name", metavar="NAME", help="the token's name (used in grants)")
    new_token.set_defaults(run=_new_token)

    submit = commands.add_parser("submit", parents=[common], help="submit a job")
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
    submit.add_argument("--delay", type=float, help="seconds before it may start")
    submit.add_argument("--idempotency-key", help="the same key returns the first task's id")
    submit.add_argument(
        "--watch", action="store_true", help="then watch it to its end (exit code as for watch)"
    )
    submit.add_argument(
        "--total", type=int, help="with --watch: the progress value that means done"
    )
    submit.set_defaults(run=_submit)

    ls = commands.add_parser("ls", parents=[common], help="list a graph's tasks, newest first")
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
    ls.set_defaults(run=_ls)

    get = commands.add_parser("get", parents=[common], help="show one task")
    get.add_argument("id", type=_task_id, metavar="ID")
    get.set_defaults(run=_get)

    for action, text in (
        ("cancel", "cancel a task (a running one goes cancelling, then cancelled)"),
        ("pause", "pause a task that has not started running"),
        ("resume", "resume a paused task"),
        ("retry", "run a failed or cancelled task again"),
    ):
        command = commands.add_parser(action, parents=[common], help=text)
        command.add_argument("id", type=_task_id, metavar="ID")
        command.set_defaults(run=_act, action=action)

    delete = commands.add_parser("delete", parents=[common], help="delete a task's record")
    delete.add_argument("id", type=_task_id, metavar="ID")
    delete.add_argument(
        "--force", action="store_true", help="delete an incomplete task too (its job runs on)"
    )
    delete.set_defaults(run=_delete)

    watch = commands.add_parser(
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
    watch.set_defaults(run=_watch)
    return parser


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


class UsageError(Exception):
    """A client command's arguments cannot be used (the parser prints it and exits 2)."""


# --- serve ---


def _serve(args: argparse.Namespace) -> int:
    from . import logs
    from .server import serve

    settings = config.load(
        args.config,
        host=args.host,
        port=args.port,
        db=args.db,
        log_format=args.log_format,
        log_level=args.log_level,
        import_paths=None if args.import_path is None else tuple(args.import_path),
    )
    logs.configure(settings.log_level, settings.log_format)
    return serve(settings, insecure=args.insecure)


# --- credentials ---


def _valid_name(name: str) -> str:
    if not name or ":" in name or name != name.strip():
        raise UsageError(f"{name!r} can't be a name: it must not be empty, have ':' or spaces around it")
    return name


def _hash_password(args: argparse.Namespace) -> int:
    from . import auth

    name = _valid_name(args.name)
    iterations = auth.DEFAULT_ITERATIONS if args.iterations is None else args.iterations
    if not 1 <= iterations <= auth.MAX_ITERATIONS:
        raise UsageError(f"--iterations must be 1 to {auth.MAX_ITERATIONS}")
    if sys.stdin.isatty():
        import getpass

        password = getpass.getpass(f"Password for {name}: ")
        if getpass.getpass("Again: ") != password:
            print("sidetask: the passwords differ", file=sys.stderr)
            return EXIT_USAGE
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("sidetask: the password is empty", file=sys.stderr)
        return EXIT_USAGE
    print(f'{name} = "{auth.hash_password(password, iterations)}"')
    return EXIT_OK


def _new_token(args: argparse.Namespace) -> int:
    from . import auth

    name = _valid_name(args.name)
    token = auth.new_token()
    print(f"# the token (shown once): send it as 'Authorization: Bearer {token}'", file=sys.stderr)
    print(token, flush=True)
    print("# under [tokens] in the configuration:", file=sys.stderr)
    print(f'{name} = "{auth.hash_token(token)}"')
    return EXIT_OK


# --- client commands ---


def _option(
    args: argparse.Namespace, name: str, env: str, default: str | None = None
) -> str | None:
    value = getattr(args, name, None)
    if value is None:
        value = os.environ.get(env) or default
    return value


def _run_client(
    args: argparse.Namespace, command: Callable[[Any, Output], Coroutine[Any, Any, int]]
) -> int:
    """Runs `command(client, output)` with the connection options, and turns the client's
    errors into a message on standard error and an exit code."""
    from .client import DEFAULT_GRAPH, DEFAULT_URL, APIError, Client, ConnectionFailed

    output = Output(json=bool(getattr(args, "json", False)))
    url = _option(args, "url", "SIDETASK_URL", DEFAULT_URL)
    graph = _option(args, "graph", "SIDETASK_GRAPH", DEFAULT_GRAPH)
    assert url is not None and graph is not None
    try:
        client = Client(
            url,
            graph,
            user=_option(args, "user", "SIDETASK_USER"),
            password=_option(args, "password", "SIDETASK_PASSWORD"),
            token=_option(args, "token", "SIDETASK_TOKEN"),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None

    async def run() -> int:
        async with client:
            return await command(client, output)

    try:
        return asyncio.run(run())
    except APIError as exc:
        kind = f" {exc.exception}" if exc.exception else ""
        # the cause says what the message may not: the status a refused action found, or
        # what removes a task that cannot be interpreted
        cause = f"; {exc.cause}" if exc.cause else ""
        output.error(f"{exc.message}{cause} (HTTP {exc.status}{kind})")
        return EXIT_ERROR
    except ConnectionFailed as exc:
        output.error(exc.message)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _read_input(args: argparse.Namespace) -> Any:
    if args.input is not None:
        text = args.input
        origin = "--input"
    elif args.input_file is not None:
        origin = "the standard input" if args.input_file == "-" else args.input_file
        try:
            if args.input_file == "-":
                text = sys.stdin.read()
            else:
                with open(args.input_file, encoding="utf-8") as handle:
                    text = handle.read()
        except OSError as exc:
            raise UsageError(f"cannot read {args.input_file}: {exc.strerror}") from None
    else:
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if exc.msg == "depth limit exceeded":
            raise UsageError(jsontext.too_deep(origin)) from None
        raise UsageError(f"{origin} is not valid JSON: {exc}") from None
    try:
        jsontext.dumps(value, origin)  # what the service would refuse, said before sending
    except jsontext.TooDeep as exc:
        raise UsageError(str(exc)) from None
    return value


def _submit(args: argparse.Namespace) -> int:
    job_input = _read_input(args)

    async def command(client: Any, out: Output) -> int:
        task_id = await client.submit(
            args.type,
            job_input,
            name=args.name,
            priority=args.priority,
            max_retries=args.max_retries,
            timeout=args.timeout,
            delay=args.delay,
            idempotency_key=args.idempotency_key,
        )
        if out.json:
            out.print_json({"task_id": task_id})
        else:
            out.print(
                f"Submitted task [bold]{task_id}[/bold] ({escape(args.type)}) to {escape(client.graph)}"
            )
        if args.watch:
            return await watch_task(client, task_id, out, args.total)
        return EXIT_OK

    return _run_client(args, command)


def _ls(args: argparse.Namespace) -> int:
    if args.limit < -1:
        raise UsageError("--limit must be -1 (all) or more")

    async def command(client: Any, out: Output) -> int:
        limit = None if args.limit == -1 else args.limit
        listed = client.list(
            args.status,
            limit=limit,
            page_size=min(limit or 500, 500),
            task_type=args.task_type,
            newest_first=args.order == "desc",
        )
        tasks = [t async for t in listed]
        # --json holds the tasks in the order the table shows them
        if out.json:
            out.print_json([t.raw for t in tasks])
        elif tasks:
            out.print(task_table(tasks, out.console.width))
        else:
            status = f" in status {args.status}" if args.status else ""
            of_type = f" of type {args.task_type}" if args.task_type else ""
            out.print(escape(f"No tasks{of_type}{status} in {client.graph}."))
        return EXIT_OK

    return _run_client(args, command)


def _get(args: argparse.Namespace) -> int:
    async def command(client: Any, out: Output) -> int:
        task = await client.get(args.id)
        if out.json:
            out.print_json(task.raw)
        else:
            out.print(task_detail(task))
        return EXIT_OK

    return _run_client(args, command)


def _act(args: argparse.Namespace) -> int:
    async def command(client: Any, out: Output) -> int:
        task = await getattr(client, args.action)(args.id)
        if out.json:
            out.print_json(task.raw)
        else:
            out.print(f"Task [bold]{task.id}[/bold] is now {styled_status(task.status)}.")
        return EXIT_OK

    return _run_client(args, command)


def _delete(args: argparse.Namespace) -> int:
    async def command(client: Any, out: Output) -> int:
        await client.delete(args.id, force=args.force)
        if not out.json:
            out.print(f"Deleted task [bold]{args.id}[/bold].")
        return EXIT_OK

    return _run_client(args, command)


def _watch(args: argparse.Namespace) -> int:
    if args.id is None:
        if args.limit < 1:
            raise UsageError("--limit must be at least 1")

        async def command(client: Any, out: Output) -> int:
            await watch_graph(
                client, out, status=args.status, task_type=args.type, limit=args.limit
            )
            return EXIT_OK

        code = _run_client(args, command)
        # Ctrl-C is how a graph's watch ends
        return EXIT_OK if code == EXIT_INTERRUPTED else code

    async def one(client: Any, out: Output) -> int:
        return await watch_task(client, args.id, out, args.total)

    return _run_client(args, one)


# --- output ---


class Output:
    """Where commands write: rich on standard output, errors on standard error."""

    def __init__(self, json: bool) -> None:
        from rich.console import Console

        self.json = json
        self.console = Console(highlight=False, soft_wrap=True)
        if not self.console.is_terminal and "COLUMNS" not in os.environ:
            # piped into a file or grep: tables as wide as they need, not squeezed into 80
            self.console = Console(highlight=False, soft_wrap=True, width=PIPE_WIDTH)
        self.errors = Console(stderr=True, highlight=False, soft_wrap=True)

    @property
    def live(self) -> bool:
        """Live displays (bars, tables redrawn in place) only on a terminal, never with --json."""
        return not self.json and self.console.is_terminal

    def print(self, *renderables: Any) -> None:
        self.console.print(*renderables)

    def print_json(self, value: Any) -> None:
        sys.stdout.write(orjson.dumps(value).decode() + "\n")
        sys.stdout.flush()

    def note(self, message: str) -> None:
        """A remark for the person at the terminal, on standard error (stdout stays data)."""
        self.errors.print(f"[dim]{escape(message)}[/dim]")

    def error(self, message: str) -> None:
        self.errors.print(f"[bold red]sidetask:[/bold red] {escape(message)}")


def when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S") if ms else ""


def styled_status(status: str) -> str:
    style = STATUS_STYLES.get(status)
    return f"[{style}]{status}[/{style}]" if style else status


#: space rich puts between two columns of a table (padding on both sides and a divider)
_GAP = 3


def task_table(tasks: Sequence[Any], width: int = PIPE_WIDTH) -> Any:
    """The tasks as a table. On a narrow terminal columns go (the timestamps first, then the
    retries and the progress) and the name is cut, so id, status and type always show."""
    from rich import box
    from rich.table import Table

    rows = [
        {
            "ID": str(t.id),
            "STATUS": styled_status(t.status),
            "TYPE": escape(t.type),
            "NAME": escape(t.name),
            "PROGRESS": str(t.progress),
            "RETRIES": str(t.retries),
            "CREATED": when(t.created_ms),
            "UPDATED": when(t.updated_ms),
        }
        for t in tasks
    ]
    plain = {
        "STATUS": [t.status for t in tasks],
        "TYPE": [t.type for t in tasks],
        "NAME": [t.name for t in tasks],
    }

    def need(name: str) -> int:
        values = plain.get(name) or [row[name] for row in rows]
        return max([len(name), *(len(v) for v in values)])

    names = ["ID", "STATUS", "TYPE", "NAME", "PROGRESS", "RETRIES", "CREATED", "UPDATED"]
    for optional in ("UPDATED", "CREATED", "RETRIES", "PROGRESS"):
        fixed = sum(need(n) for n in names if n != "NAME") + _GAP * (len(names) - 1)
        if fixed + 8 <= width:
            break
        names.remove(optional)
    fixed = sum(need(n) for n in names if n != "NAME") + _GAP * (len(names) - 1)
    name_width = max(4, min(need("NAME"), 40, width - fixed))

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for name in names:
        right = name in ("ID", "PROGRESS", "RETRIES")
        table.add_column(
            name,
            justify="right" if right else "left",
            no_wrap=True,
            overflow="ellipsis",
            width=name_width if name == "NAME" else need(name),
        )
    for row in rows:
        table.add_row(*(row[name] for name in names))
    return table


def task_detail(task: Any) -> Any:
    from rich.table import Table

    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in task.raw.items():
        if key == "task_status":
            text = styled_status(str(value))
        elif key in ("task_create", "task_update") and isinstance(value, int):
            text = f"{when(value)} ({value})"
        else:
            text = escape(value if isinstance(value, str) else orjson.dumps(value).decode())
        table.add_row(key, text)
    return table


def _total_of(task: Any, given: int | None) -> int | None:
    """The progress value that means done: given, else the one the job declared
    (task_progress_total), else the input's `total` or `steps` (the built-in sleep job
    counts its steps), else unknown."""
    if given is not None:
        return given if given > 0 else None
    if task.progress_total is not None:
        return int(task.progress_total)
    try:
        value = task.input_value()
    except ValueError:
        return None
    if isinstance(value, dict):
        for key in ("total", "steps"):
            candidate = value.get(key)
            if isinstance(candidate, int) and not isinstance(candidate, bool) and candidate > 0:
                return candidate
    return None


class _Total:
    """`_total_of` along one task's events: a status or progress event leaves the input
    out (only the first state and task.created carry it), so what it gave is kept."""

    def __init__(self, given: int | None) -> None:
        self.given = given
        self.known: int | None = None

    def of(self, task: Any) -> int | None:
        if self.given is not None or task.progress_total is not None or task.input is not None:
            self.known = _total_of(task, self.given)
        return self.known


def _outcome(task: Any, deleted: bool, out: Output) -> int:
    if deleted or task is None:
        out.error("the task was deleted")
        return EXIT_ERROR
    if out.json:
        pass
    elif task.status == "success":
        out.print(
            f"Task [bold]{task.id}[/bold] {styled_status('success')}: {escape(task.result or '')}"
        )
    elif task.status == "failed":
        out.print(
            f"Task [bold]{task.id}[/bold] {styled_status('failed')}: {escape(task.result or '')}"
        )
    else:
        out.print(f"Task [bold]{task.id}[/bold] {styled_status(task.status)}.")
    return {"success": EXIT_OK, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}.get(
        task.status, EXIT_ERROR
    )


async def watch_task(client: Any, task_id: int, out: Output, total: int | None = None) -> int:
    """Follows one task to its end: a progress bar on a terminal, a line per change
    otherwise, one JSON object per event with --json. 0 success, 1 failed, 2 cancelled."""
    stream = client.events(task_id)
    last = None
    deleted = False
    try:
        if out.live:
            last, deleted = await _watch_bar(stream, out, total)
        else:
            shown: tuple[str, int] | None = None
            totals = _Total(total)
            async for event in stream:
                if out.json:
                    out.print_json({"id": event.id, "event": event.kind, "data": event.data})
                if event.kind == "task.deleted":
                    deleted = True
                    continue
                last = event.task
                limit = totals.of(last)
                if not out.json and (last.status, last.progress) != shown:
                    shown = (last.status, last.progress)
                    count = f"{last.progress}/{limit}" if limit else str(last.progress)
                    out.print(f"task {last.id} {styled_status(last.status)} progress {count}")
    finally:
        await stream.close()
    return _outcome(last, deleted, out)


async def _watch_bar(stream: Any, out: Output, total: int | None) -> tuple[Any, bool]:
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[count]}"),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=out.console,
    )
    last = None
    deleted = False
    totals = _Total(total)
    with progress:
        bar = None
        async for event in stream:
            if event.kind == "task.deleted":
                deleted = True
                continue
            last = event.task
            limit = totals.of(last)
            done = last.progress
            if last.status == "success" and limit:
                done = limit
            count = f"{last.progress}/{limit}" if limit else str(last.progress)
            status = styled_status(last.status)
            if bar is None:
                bar = progress.add_task(
                    f"task {last.id} {escape(last.name)}",
                    total=limit,
                    completed=done,
                    count=count,
                    status=status,
                )
            else:
                progress.update(bar, total=limit, completed=done, count=count, status=status)
        if bar is not None:
            progress.stop_task(bar)
    return last, deleted


async def watch_graph(
    client: Any, out: Output, *, status: str | None, task_type: str | None, limit: int
) -> None:
    """A graph's tasks as they change: a table redrawn in place on a terminal (the tasks
    not yet completed when it starts, then every task that changes), a line per event
    otherwise, one JSON object per event with --json. Runs until interrupted."""
    stream = client.events(status=status, type=task_type)
    rows: dict[int, Any] = {}
    try:
        # subscribed before the snapshot is read: no change falls between the two
        await stream.connect()
        if out.live:
            for name in [status.lower()] if status else WATCHED_STATUSES:
                async for task in client.list(name, limit=limit):
                    if task_type is None or task.type == task_type:
                        rows[task.id] = task
            await _live_table(stream, out, rows, limit, client.graph)
        else:
            what = f"{task_type} tasks" if task_type else "tasks"
            out.note(f"Watching the {what} of {client.graph} (Ctrl-C to stop)")
            async for event in stream:
                if out.json:
                    out.print_json({"id": event.id, "event": event.kind, "data": event.data})
                elif event.task is None:
                    out.print(f"task {event.task_id} deleted")
                else:
                    task = event.task
                    out.print(
                        f"task {task.id} {styled_status(task.status)} progress {task.progress} "
                        f"({escape(task.type)})"
                    )
    finally:
        await stream.close()


async def _live_table(
    stream: Any, out: Output, rows: dict[int, Any], limit: int, graph: str
) -> None:
    from rich.live import Live

    def render() -> Any:
        shown = [rows[i] for i in sorted(rows)[-limit:]]
        table = task_table(shown, out.console.width)
        table.title = f"{graph}: {len(shown)} task(s), live"
        return table

    with Live(render(), console=out.console, auto_refresh=False) as live:
        async for event in stream:
            if event.task is None:
                rows.pop(event.task_id, None)
            else:
                known = rows.get(event.task_id)
                # the snapshot may be newer than an event that waited in the socket meanwhile
                if known is None or event.task.updated_ms >= known.updated_ms:
                    rows[event.task_id] = event.task
            live.update(render(), refresh=True)


if __name__ == "__main__":
    sys.exit(main())
