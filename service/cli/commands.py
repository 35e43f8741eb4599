"""The sidetask command's commands: `serve`, the credentials helpers, and the client
commands, each run on a service.client.Client with the connection options."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import orjson
from rich.markup import escape

from .. import config, jsontext
from .exits import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, UsageError
from .render import (
    Output,
    attempt_table,
    schedule_detail,
    schedule_table,
    styled_status,
    task_detail,
    task_table,
    type_table,
)
from .watch import watch_graph, watch_task

if TYPE_CHECKING:
    from rich.text import Text

    from ..client import Client, LogLine, Task

# --- serve ---


def serve(args: argparse.Namespace) -> int:
    from .. import logs
    from ..server import serve as run_service

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
    return run_service(settings, insecure=args.insecure)


def migrate(args: argparse.Namespace) -> int:
    from .. import errors, store

    settings = config.load(args.config, db=args.db)
    try:
        version = asyncio.run(store.migrate(settings.db, settings.db_schema))
    except errors.SidetaskError as exc:
        print(f"sidetask: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    print(f"{store.describe_db(settings.db)}: schema version {version}")
    return EXIT_OK


def copy_db(args: argparse.Namespace) -> int:
    from .. import errors, store

    if not args.target.startswith(("postgresql://", "postgres://")):
        raise UsageError(f"--to must be a PostgreSQL URL (postgresql://…), not {args.target!r}")
    try:
        from ..store.copy import copy_db as run_copy

        tasks, events = asyncio.run(run_copy(args.source, args.target, args.schema))
    except errors.SidetaskError as exc:
        print(f"sidetask: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    except ValueError as exc:  # the schema's name
        raise UsageError(str(exc)) from None
    print(
        f"copied {tasks} task(s) and {events} event(s) from {args.source} to "
        f"{store.describe_db(args.target)} (schema {args.schema})"
    )
    return EXIT_OK


# --- credentials ---


def _valid_name(name: str) -> str:
    if not name or ":" in name or name != name.strip():
        raise UsageError(
            f"{name!r} can't be a name: it must not be empty, have ':' or spaces around it"
        )
    return name


def hash_password(args: argparse.Namespace) -> int:
    from .. import auth

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


def new_token(args: argparse.Namespace) -> int:
    from .. import auth

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
    args: argparse.Namespace, command: Callable[[Client, Output], Coroutine[Any, Any, int]]
) -> int:
    """Runs `command(client, output)` with the connection options, and turns the client's
    errors into a message on standard error and an exit code."""
    from ..client import DEFAULT_GRAPH, DEFAULT_URL, APIError, Client, ConnectionFailed

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


def submit(args: argparse.Namespace) -> int:
    job_input = _read_input(args)

    async def command(client: Client, out: Output) -> int:
        task_id = await client.submit(
            args.type,
            job_input,
            name=args.name,
            priority=args.priority,
            max_retries=args.max_retries,
            timeout=args.timeout,
            delay=args.delay,
            run_at=args.run_at,
            idempotency_key=args.idempotency_key,
            dependencies=args.after,
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


def ls(args: argparse.Namespace) -> int:
    if args.limit < -1:
        raise UsageError("--limit must be -1 (all) or more")

    async def command(client: Client, out: Output) -> int:
        limit = None if args.limit == -1 else args.limit
        listed = client.list(
            args.status,
            limit=limit,
            page_size=min(limit or 500, 500),
            task_type=args.task_type,
            newest_first=args.order == "desc",
            **_filter(args),
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


def _filter(args: argparse.Namespace) -> dict[str, Any]:
    """The filter options of `ls` and `bulk` as the client's keywords (those given)."""
    names = ("name", "created_from", "created_to", "updated_from", "updated_to")
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


#: tasks a bulk command's question counts before it says "or more"
BULK_PREVIEW = 1000


def bulk(args: argparse.Namespace) -> int:
    terms = {**_filter(args), "task_type": args.task_type}
    if args.status is None and not any(v is not None for v in terms.values()) and not args.every:
        raise UsageError(
            "give a filter (--status, --type, --name, --created-…, --updated-…) or --all"
        )
    if args.force and args.action != "delete":
        raise UsageError("--force goes with delete only")

    async def command(client: Client, out: Output) -> int:
        if not args.yes:
            listed = client.list(
                args.status, limit=BULK_PREVIEW + 1, page_size=BULK_PREVIEW + 1, **terms
            )
            count = len([t async for t in listed])
            if count == 0:
                out.note(f"No tasks in {client.graph} match.")
                return EXIT_OK
            many = f"more than {BULK_PREVIEW:,}" if count > BULK_PREVIEW else f"{count:,}"
            out.note(f"This will {args.action} {many} tasks of {client.graph}.")
            sys.stderr.write("Go on? [y/N] ")
            sys.stderr.flush()
            answer = await asyncio.to_thread(sys.stdin.readline)
            if answer.strip().lower() not in ("y", "yes"):
                out.note("Nothing done.")
                return EXIT_ERROR
        result = await client.bulk(
            args.action,
            args.status,
            every=args.every,
            force=args.force,
            timeout=args.timeout,
            **terms,
        )
        if out.json:
            out.print_json(result.raw)
            return EXIT_OK
        out.print(
            escape(
                f"{args.action.capitalize()}: {result.changed:,} of the {result.matched:,} "
                f"matching tasks changed."
            )
        )
        for reason, count in result.refused.items():
            out.print(escape(f"  {count:,} refused: {reason}"))
        return EXIT_OK

    return _run_client(args, command)


def schedules(args: argparse.Namespace) -> int:
    action = args.schedule_command or "list"
    job_input = None
    if action == "add" and args.input is not None:
        try:
            job_input = orjson.loads(args.input)
        except orjson.JSONDecodeError as exc:
            raise UsageError(f"--input is not valid JSON: {exc}") from None
        if not isinstance(job_input, dict):
            raise UsageError("--input must be a JSON object (the job's input)")

    async def command(client: Client, out: Output) -> int:
        if action == "list":
            found = await client.schedules()
            if out.json:
                out.print_json([s.raw for s in found])
            elif found:
                out.print(schedule_table(found))
            else:
                out.print(escape(f"No schedules in {client.graph}."))
            return EXIT_OK
        if action == "delete":
            await client.delete_schedule(args.name)
            if not out.json:
                out.print(f"Deleted schedule [bold]{escape(args.name)}[/bold]")
            return EXIT_OK
        if action == "add":
            schedule = await client.create_schedule(
                args.name,
                args.type,
                job_input,
                cron=args.cron,
                timezone=args.timezone,
                every=args.every,
                task_name=args.task_name,
                priority=args.priority,
                max_retries=args.max_retries,
                timeout=args.timeout,
                missed=args.missed,
                paused=args.paused,
            )
        elif action == "pause":
            schedule = await client.pause_schedule(args.name)
        elif action == "resume":
            schedule = await client.resume_schedule(args.name)
        else:
            schedule = await client.schedule(args.name)
        if out.json:
            out.print_json(schedule.raw)
        else:
            out.print(schedule_detail(schedule))
        return EXIT_OK

    return _run_client(args, command)


def job_types(args: argparse.Namespace) -> int:
    action = args.type_command or "list"

    async def command(client: Client, out: Output) -> int:
        if action == "list":
            found = await client.job_types()
            if out.json:
                out.print_json(found)
            else:
                out.print(type_table(found["types"], found["paused"]))
            return EXIT_OK
        if action == "pause":
            answer = await client.pause_type(args.type)
        else:
            answer = await client.resume_type(args.type)
        if out.json:
            out.print_json(answer)
        elif answer["paused"]:
            out.print(
                f"Job type [bold]{escape(args.type)}[/bold] is paused: nothing new of it "
                "starts until it is resumed."
            )
        else:
            out.print(f"Job type [bold]{escape(args.type)}[/bold] runs again.")
        return EXIT_OK

    return _run_client(args, command)


def get(args: argparse.Namespace) -> int:
    async def command(client: Client, out: Output) -> int:
        task = await client.get(args.id)
        if out.json:
            out.print_json(task.raw)
        else:
            out.print(task_detail(task))
        return EXIT_OK

    return _run_client(args, command)


def attempts(args: argparse.Namespace) -> int:
    async def command(client: Client, out: Output) -> int:
        runs = await client.attempts(args.id)
        if out.json:
            out.print_json([a.raw for a in runs])
            return EXIT_OK
        if not runs:
            out.note(f"task {args.id} has not run yet")
            return EXIT_OK
        out.print(attempt_table(runs))
        if args.traceback:
            for run in runs:
                if run.traceback:
                    out.print(f"[bold]attempt {run.number}[/bold]")
                    out.print(escape(run.traceback.rstrip("\n")))
        return EXIT_OK

    return _run_client(args, command)


#: how `sidetask deliveries` shows a delivery's state
DELIVERY_STYLES = {"delivered": "green", "pending": "cyan", "failed": "bold red"}


def deliveries(args: argparse.Namespace) -> int:
    async def command(client: Client, out: Output) -> int:
        found = await client.deliveries(args.id)
        if out.json:
            out.print_json([d.raw for d in found])
            return EXIT_OK
        if not found:
            out.note(f"task {args.id} has no webhook deliveries")
            return EXIT_OK
        from rich import box
        from rich.table import Table

        from .render import when

        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for name in ("DELIVERY", "HOOK", "STATUS", "STATE", "TRIES", "LAST ANSWER", "NEXT TRY"):
            table.add_column(name, no_wrap=name != "LAST ANSWER", overflow="fold")
        for d in found:
            answer = str(d.last_code) if d.last_code is not None else (d.last_error or "")
            table.add_row(
                d.id[:12],
                escape(d.hook if d.hook != "callback" else f"callback {d.url}"),
                styled_status(d.status),
                f"[{DELIVERY_STYLES.get(d.state, 'bold red')}]{d.state}[/]",
                str(d.attempts),
                escape(answer),
                "" if d.next_try_ms is None else when(d.next_try_ms),
            )
        out.print(table)
        return EXIT_OK

    return _run_client(args, command)


#: the levels `sidetask logs --level` takes, lowest first
LOG_LEVELS = ("debug", "info", "warning", "error")
_LEVEL_STYLES = {"debug": "dim", "info": "", "warning": "yellow", "error": "bold red"}


def logs(args: argparse.Namespace) -> int:
    """The task's log lines; with --follow, then the new ones as they come (task.log
    events on its stream) until the task ends."""

    async def command(client: Client, out: Output) -> int:
        floor = LOG_LEVELS.index(args.level)
        last = 0

        def show(lines: list[LogLine]) -> None:
            nonlocal last
            for line in lines:
                if line.id <= last or line.level not in LOG_LEVELS[floor:]:
                    continue
                last = line.id
                if out.json:
                    out.print_json(
                        {"id": line.id, "time": line.time_ms, "level": line.level,
                         "attempt": line.attempt, "text": line.text}
                    )  # fmt: skip
                else:
                    out.print(_log_line(line))

        async def catch_up() -> None:
            while True:
                page = await client.logs(args.id, after=last, limit=1000, level=args.level)
                show(page)
                if len(page) < 1000:
                    return

        if not args.follow:
            await client.get(args.id)  # an unknown task: its 404, not an empty log
            await catch_up()
            return EXIT_OK
        # subscribed first, then what is stored: no line falls between the two
        async with client.events(args.id, logs=True) as stream:
            await catch_up()
            async for event in stream:
                if event.kind != "task.log":
                    continue
                if event.data.get("omitted"):
                    await catch_up()  # more than the event carries: read from the store
                else:
                    show(event.lines)
        await catch_up()
        return EXIT_OK

    return _run_client(args, command)


def _log_line(line: LogLine) -> Text:
    from datetime import datetime

    from rich.text import Text

    when = datetime.fromtimestamp(line.time_ms / 1000).strftime("%H:%M:%S.%f")[:-3]
    attempt = "-" if line.attempt is None else str(line.attempt)
    text = Text(f"{when} {line.level:<7} #{attempt} ", style="dim")
    text.append(line.text, style=_LEVEL_STYLES.get(line.level, ""))
    return text


def act(args: argparse.Namespace) -> int:
    async def command(client: Client, out: Output) -> int:
        actions: dict[str, Callable[[int], Coroutine[Any, Any, Task]]] = {
            "cancel": client.cancel,
            "pause": client.pause,
            "resume": client.resume,
            "retry": client.retry,
        }
        task = await actions[args.action](args.id)
        if out.json:
            out.print_json(task.raw)
        else:
            out.print(f"Task [bold]{task.id}[/bold] is now {styled_status(task.status)}.")
        return EXIT_OK

    return _run_client(args, command)


def delete(args: argparse.Namespace) -> int:
    async def command(client: Client, out: Output) -> int:
        await client.delete(args.id, force=args.force)
        if not out.json:
            out.print(f"Deleted task [bold]{args.id}[/bold].")
        return EXIT_OK

    return _run_client(args, command)


def watch(args: argparse.Namespace) -> int:
    if args.id is None:
        if args.limit < 1:
            raise UsageError("--limit must be at least 1")

        async def command(client: Client, out: Output) -> int:
            await watch_graph(
                client, out, status=args.status, task_type=args.type, limit=args.limit
            )
            return EXIT_OK

        code = _run_client(args, command)
        # Ctrl-C is how a graph's watch ends
        return EXIT_OK if code == EXIT_INTERRUPTED else code

    async def one(client: Client, out: Output) -> int:
        return await watch_task(client, args.id, out, args.total)

    return _run_client(args, one)
