"""Every SQL statement of the SQLite store, by name. A query whose shape does not depend on
the call is a constant with `?` parameters; one whose shape does (an IN list of variable
length, an optional filter) is built by a named function, cached per shape, so a call costs
a dictionary lookup and never a string built anew. The writer's savepoints (one per write
when a batch is redone, one per status change) are set in writer.py, beside the code whose
failure they undo."""

from __future__ import annotations

import functools

from ..model import COMPLETED_STATUSES, INTERRUPTIBLE_STATUSES, Status

#: the task columns, in the order every SELECT and RETURNING lists them (rows.row_to_task)
TASK_COLUMNS = (
    "id, graphspace, graph, name, type, callable, status, progress, create_ms, update_ms, "
    "result, input, retries, max_retries, priority, timeout, run_after_ms, server, description, "
    "progress_total, traceparent, tracestate, dependencies, waiting_on, dependants, schedule, "
    "schedule_fire_ms"
)
#: the event columns, in the order rows.row_to_event reads them
EVENT_COLUMNS = "id, kind, task_id, graphspace, graph, task_type, status, data"
#: the completed statuses as SQL, as the partial index tasks_completed_by_update lists them
COMPLETED_SQL = "(" + ", ".join(f"'{s.value}'" for s in sorted(COMPLETED_STATUSES)) + ")"
#: the stored statuses recover() looks at, as its query's parameters
INTERRUPTIBLE_VALUES = tuple(sorted(s.value for s in INTERRUPTIBLE_STATUSES))
#: every known status value (the parameters of UNINTERPRETABLE)
KNOWN_VALUES = tuple(s.value for s in Status if s is not Status.UNKNOWN)


@functools.lru_cache(maxsize=512)
def marks(count: int) -> str:
    """`count` parameters of an IN list: "?, ?, ?"."""
    return ", ".join("?" * count)


#: true in SQL for exactly the rows rows.row_to_task reads as `unknown` (kept in step with
#: it); its parameters are KNOWN_VALUES. Only the reader connections have sidetask_json.
UNINTERPRETABLE = (
    f"(status IS NULL OR status NOT IN ({marks(len(KNOWN_VALUES))})"
    " OR typeof(graphspace) != 'text' OR typeof(graph) != 'text' OR typeof(name) != 'text'"
    " OR typeof(type) != 'text' OR typeof(callable) != 'text'"
    " OR typeof(progress) != 'integer' OR typeof(create_ms) != 'integer'"
    " OR typeof(update_ms) != 'integer' OR typeof(retries) != 'integer'"
    " OR typeof(max_retries) != 'integer' OR typeof(priority) != 'integer'"
    " OR typeof(run_after_ms) != 'integer' OR typeof(timeout) NOT IN ('real', 'integer', 'null')"
    " OR typeof(result) NOT IN ('text', 'null') OR typeof(server) NOT IN ('text', 'null')"
    " OR typeof(description) NOT IN ('text', 'null')"
    " OR typeof(progress_total) NOT IN ('integer', 'null')"
    " OR typeof(traceparent) NOT IN ('text', 'null') OR typeof(tracestate) NOT IN ('text', 'null')"
    " OR typeof(schedule) NOT IN ('text', 'null')"
    " OR typeof(schedule_fire_ms) NOT IN ('integer', 'null')"
    " OR (input IS NOT NULL AND (typeof(input) != 'text' OR NOT sidetask_json(input))))"
)

# --- connections, schema ---

WRITER_PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    # FULL: a commit is on disk before the 201 goes out; group commit pays for it.
    "PRAGMA synchronous = FULL",
    "PRAGMA busy_timeout = 2000",
)
READER_PRAGMAS = ("PRAGMA query_only = ON", "PRAGMA busy_timeout = 2000")
MAX_PAGE_COUNT = "PRAGMA max_page_count"
USER_VERSION = "PRAGMA user_version"
#: ids after every id ever handed out, deleted (purged) ones included
LAST_EVENT_ID_EVER = (
    "SELECT MAX(COALESCE((SELECT MAX(id) FROM events), 0),"
    " COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0))"
)


def set_max_page_count(pages: int) -> str:
    """A PRAGMA takes no parameters: the (integer) value is written into it."""
    return f"PRAGMA max_page_count = {int(pages)}"


def migration(script: str, number: int) -> str:
    """A migration and its version bump, one transaction (executescript commits first)."""
    return f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {int(number)};\nCOMMIT;"


# --- transactions ---

BEGIN = "BEGIN IMMEDIATE"
COMMIT = "COMMIT"
ROLLBACK = "ROLLBACK"


# --- tasks ---

SELECT_TASK = f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?"
SELECT_BY_IDEMPOTENCY_KEY = (
    f"SELECT {TASK_COLUMNS}, idempotency_fingerprint FROM tasks"
    " WHERE graphspace = ? AND graph = ? AND idempotency_key = ?"
)
INSERT_TASK = (
    "INSERT INTO tasks (graphspace, graph, name, type, callable, status, create_ms,"
    " update_ms, input, max_retries, priority, timeout, run_after_ms, idempotency_key,"
    " idempotency_fingerprint, traceparent, tracestate)"
    f" VALUES (?, ?, ?, ?, ?, 'new', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {TASK_COLUMNS}"
)
#: a schedule's task: the schedule and the fire time, in the insert's transaction
SET_TASK_SCHEDULE = (
    f"UPDATE tasks SET schedule = ?, schedule_fire_ms = ? WHERE id = ? RETURNING {TASK_COLUMNS}"
)
SET_PROGRESS = (
    "UPDATE tasks SET progress = ?, progress_total = coalesce(?, progress_total),"
    " update_ms = ? WHERE id = ? AND status IN ('running', 'cancelling')"
    " AND (progress != ? OR coalesce(?, progress_total) IS NOT progress_total)"
    f" RETURNING {TASK_COLUMNS}"
)
DELETE_TASK = "DELETE FROM tasks WHERE id = ?"


@functools.lru_cache(maxsize=64)
def delete_task_from(sources: int) -> str:
    """DELETE_TASK as a compare-and-set: only from one of `sources` statuses.
    Parameters: the id, the statuses."""
    return f"{DELETE_TASK} AND status IN ({marks(sources)})"


SET_PROCESS_GROUP = "UPDATE tasks SET process_group = ?, process_token = ? WHERE id = ?"
PROCESS_GROUPS = (
    "SELECT id, process_group, process_token FROM tasks WHERE process_group IS NOT NULL"
)


@functools.lru_cache(maxsize=512)
def change_status(fields: tuple[str, ...], ids: int, sources: int) -> str:
    """The compare-and-set UPDATE of a status change setting `fields`, on `ids` tasks, from
    `sources` statuses; parameters: target, now, the fields' values, the ids, the sources."""
    assignments = "".join(f", {name} = ?" for name in fields)
    where = "id = ?" if ids == 1 else f"id IN ({marks(ids)})"
    # `+status`: without it SQLite plans `id IN (…) AND status IN (…)` as a search of the
    # status index, which walks every task waiting in that status (the backlog) per step.
    return (
        f"UPDATE tasks SET status = ?, update_ms = ?{assignments}"
        f" WHERE {where} AND +status IN ({marks(sources) or 'NULL'}) RETURNING {TASK_COLUMNS}"
    )


@functools.lru_cache(maxsize=512)
def change_status_rows(fields: tuple[str, ...], rows: int, sources: int) -> str:
    """`change_status` for `rows` tasks that each set `fields` to values of their own (a
    batch of job ends, each with its result), as one statement: the values come as rows
    of (id, the fields' values). Parameters: target, now, each row's id and values, the
    sources."""
    assignments = "".join(f", {name} = v.column{i}" for i, name in enumerate(fields, start=2))
    row = f"({marks(len(fields) + 1)})"
    return (
        f"UPDATE tasks SET status = ?, update_ms = ?{assignments}"
        f" FROM (VALUES {', '.join([row] * rows)}) AS v"
        f" WHERE tasks.id = v.column1 AND +tasks.status IN ({marks(sources) or 'NULL'})"
        f" RETURNING {TASK_COLUMNS}"
    )


# Waiting tasks whose due time has come join the due ones (run_after_ms 0, the claim
# index): a range of tasks_delayed, empty when none has come. Not an event: the task's
# status and everything the API shows of it stay as they were (task_run_at is shown only
# while a task waits for a later time). Parameters: now.
RELEASE_DUE = (
    "UPDATE tasks INDEXED BY tasks_delayed SET run_after_ms = 0"
    " WHERE status IN ('new', 'restoring') AND run_after_ms > 0 AND run_after_ms <= ?"
)


@functools.lru_cache(maxsize=512)
def claim_waiting(excluded: int, damaged: int) -> str:
    """Due waiting tasks in claim order, not of `excluded` types nor `damaged` ids (after
    RELEASE_DUE).

    The partial index holds only due waiting tasks, in claim order: the scan stops after
    `limit` of them instead of sorting every waiting task, and never walks the delayed
    ones. Parameters: the excluded types, the damaged ids, the limit."""
    sql = (
        "SELECT id, status, type FROM tasks INDEXED BY tasks_waiting"
        " WHERE status IN ('new', 'restoring') AND run_after_ms = 0 AND waiting_on = 0"
    )
    if excluded:
        sql += f" AND type NOT IN ({marks(excluded)})"
    if damaged:
        sql += f" AND id NOT IN ({marks(damaged)})"
    return sql + " ORDER BY priority DESC, id LIMIT ?"


@functools.lru_cache(maxsize=64)
def interrupted(kept: int) -> str:
    """Tasks a dead process left mid-way, but those of `kept` types held under a lease.
    Parameters: INTERRUPTIBLE_VALUES, the kept types."""
    sql = f"SELECT {TASK_COLUMNS} FROM tasks WHERE status IN ({marks(len(INTERRUPTIBLE_VALUES))})"
    if kept:
        sql += f" AND (type NOT IN ({marks(kept)}) OR lease_expires_ms IS NULL)"
    return sql + " ORDER BY id"


# The partial index of completed tasks by age: the IN list must read as the index's does,
# and INDEXED BY keeps the planner off tasks_by_status_type, which would walk every
# completed task when none is old enough.
PURGEABLE_TASKS = (
    f"SELECT {TASK_COLUMNS} FROM tasks INDEXED BY tasks_completed_by_update"
    f" WHERE status IN {COMPLETED_SQL} AND update_ms < ?"
    " LIMIT ?"
)
# Event ids grow with time, so the oldest events are the first ids.
PURGE_EVENTS = (
    "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT ?) AND create_ms < ?"
)

# --- external workers' leases ---


@functools.lru_cache(maxsize=256)
def next_leasable(types: int, damaged: int) -> str:
    """The first due waiting task of `types`, not of the `damaged` ids (after RELEASE_DUE).
    Parameters: the types, the damaged ids."""
    skip = f" AND id NOT IN ({marks(damaged)})" if damaged else ""
    return (
        "SELECT id FROM tasks INDEXED BY tasks_waiting"
        " WHERE status IN ('new', 'restoring') AND run_after_ms = 0 AND waiting_on = 0"
        f" AND type IN ({marks(types)})"
        f"{skip} ORDER BY priority DESC, id LIMIT 1"
    )


@functools.lru_cache(maxsize=256)
def next_due(types: int, damaged: int) -> str:
    """When the next waiting task of `types` comes due (none is due now: the lease looked
    first). Parameters: the types, the ids."""
    skip = f" AND id NOT IN ({marks(damaged)})" if damaged else ""
    return (
        "SELECT MIN(run_after_ms) FROM tasks INDEXED BY tasks_delayed"
        " WHERE status IN ('new', 'restoring') AND run_after_ms > 0"
        f" AND type IN ({marks(types)}){skip}"
    )


SET_LEASE = "UPDATE tasks SET lease = ?, lease_expires_ms = ? WHERE id = ?"
SELECT_LEASED = f"SELECT {TASK_COLUMNS}, lease, lease_expires_ms FROM tasks WHERE id = ?"
REPORT_PROGRESS = (
    f"UPDATE tasks SET progress = ?, update_ms = ? WHERE id = ? RETURNING {TASK_COLUMNS}"
)
EXTEND_LEASE = "UPDATE tasks SET lease_expires_ms = ? WHERE id = ?"
END_LEASE = "UPDATE tasks SET lease_expires_ms = NULL WHERE id = ?"
DROP_LEASE = "UPDATE tasks SET lease = NULL, lease_expires_ms = NULL WHERE id = ?"


@functools.lru_cache(maxsize=64)
def expired_leases(statuses: int, types: int) -> str:
    """Tasks of `types` in the leased `statuses` whose lease ran out, oldest expiry first.
    Parameters: now, the statuses, the types."""
    return (
        f"SELECT {TASK_COLUMNS} FROM tasks WHERE lease_expires_ms <= ?"
        f" AND status IN ({marks(statuses)}) AND type IN ({marks(types)}) ORDER BY lease_expires_ms"
    )


@functools.lru_cache(maxsize=64)
def unleased(statuses: int, types: int) -> str:
    """Tasks of `types` in the leased `statuses` with no lease (read through
    tasks_by_status_type). Parameters: the statuses, the types."""
    return (
        f"SELECT {TASK_COLUMNS} FROM tasks WHERE status IN ({marks(statuses)})"
        f" AND type IN ({marks(types)}) AND lease_expires_ms IS NULL ORDER BY id"
    )


@functools.lru_cache(maxsize=64)
def renew_leases(statuses: int, types: int) -> str:
    """Every live lease on tasks of `types` in `statuses` lasts at least until a time.
    Parameters: the time, the statuses, the types."""
    return (
        "UPDATE tasks SET lease_expires_ms = MAX(lease_expires_ms, ?)"
        f" WHERE lease_expires_ms IS NOT NULL AND status IN ({marks(statuses)})"
        f" AND type IN ({marks(types)})"
    )


# --- events ---

INSERT_EVENT = (
    "INSERT INTO events (id, task_id, graphspace, graph, kind, task_type, status, data,"
    " create_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
LAST_EVENT_ID = "SELECT COALESCE(MAX(id), 0) FROM events"


@functools.lru_cache(maxsize=16)
def events_after(by_task: bool, by_graph: bool, bounded: bool) -> str:
    """Events after an id, in id order, of one task and/or graph; parameters: the id, the
    task id, graphspace and graph (those asked), the limit. `bounded`: only those that
    start within a number of bytes of data, parameters: the filter's twice, the limit, the
    bytes. The page's last id is a running sum of the sizes, which SQLite reads from each
    row's header (length() of a BLOB does not load it); the scan stops at the limit."""
    where = "id > ?"
    if by_task:
        where += " AND task_id = ?"
    if by_graph:
        where += " AND graphspace = ? AND graph = ?"
    if not bounded:
        return f"SELECT {EVENT_COLUMNS} FROM events WHERE {where} ORDER BY id LIMIT ?"
    sizes = (
        "SELECT id, length(data) AS size, SUM(length(data)) OVER"
        f" (ORDER BY id ROWS UNBOUNDED PRECEDING) AS upto FROM events WHERE {where}"
        " ORDER BY id LIMIT ?"
    )
    return (
        f"SELECT {EVENT_COLUMNS} FROM events WHERE {where} AND id <="
        f" (SELECT MAX(id) FROM ({sizes}) WHERE upto - size < ?) ORDER BY id"
    )


# --- reads ---

COUNT_BY_STATUS_TYPE = "SELECT status, type, COUNT(*) FROM tasks GROUP BY status, type"
# reads only the index tasks_by_graph_status
COUNT_GRAPH_STATUSES = (
    "SELECT status, COUNT(*) FROM tasks WHERE graphspace = ? AND graph = ? GROUP BY status"
)


@functools.lru_cache(maxsize=512)
def graph_tasks_by_id(ids: int) -> str:
    """A graph's tasks of `ids`, in id order. Parameters: graphspace, graph, the ids."""
    return (
        f"SELECT {TASK_COLUMNS} FROM tasks WHERE graphspace = ? AND graph = ?"
        f" AND id IN ({marks(ids)}) ORDER BY id"
    )


#: a Selection's terms, in the order Selection.terms gives their parameters
SELECTION_TERMS = (
    "name >= ?",
    "name < ?",
    "create_ms >= ?",
    "create_ms < ?",
    "update_ms >= ?",
    "update_ms < ?",
)
#: the index each pair of SELECTION_TERMS reads (schema 12)
SELECTION_INDEXES = ("tasks_by_graph_name", "tasks_by_graph_create", "tasks_by_graph_update")


def _selection_sql(selected: tuple[bool, ...]) -> str:
    return "".join(f" AND {t}" for t, on in zip(SELECTION_TERMS, selected, strict=False) if on)


@functools.lru_cache(maxsize=64)
def ids_selected(index: str, terms: tuple[bool, ...]) -> str:
    """How many of a graph's tasks a time range holds, and their lowest and highest id,
    read in `index` alone up to a limit. Parameters: graphspace, graph, the terms', the
    limit."""
    return (
        f"SELECT count(*), min(id), max(id) FROM (SELECT id FROM tasks INDEXED BY {index}"
        f" WHERE graphspace = ? AND graph = ?{_selection_sql(terms)} LIMIT ?)"
    )


#: the first name above one, in a prefix's range. Parameters: graphspace, graph, the name
#: it goes on from, the range's end
NEXT_NAME = (
    "SELECT name FROM tasks INDEXED BY tasks_by_graph_name WHERE graphspace = ? AND graph = ?"
    " AND name > ? AND name < ? ORDER BY name LIMIT 1"
)
#: whether a task has this name. Parameters: graphspace, graph, the name
NAME_EXISTS = (
    "SELECT 1 FROM tasks INDEXED BY tasks_by_graph_name WHERE graphspace = ? AND graph = ?"
    " AND name = ? LIMIT 1"
)
#: the same without an end (a prefix of U+10FFFF only)
NEXT_NAME_UNBOUNDED = (
    "SELECT name FROM tasks INDEXED BY tasks_by_graph_name WHERE graphspace = ? AND graph = ?"
    " AND name > ? ORDER BY name LIMIT 1"
)


@functools.lru_cache(maxsize=64)
def count_selected(index: str, terms: tuple[bool, ...]) -> str:
    """How many of a graph's tasks one pair of a selection's terms takes, counted up to a
    limit in `index` alone. Parameters: graphspace, graph, the terms', the limit."""
    return (
        f"SELECT count(*) FROM (SELECT 1 FROM tasks INDEXED BY {index}"
        f" WHERE graphspace = ? AND graph = ?{_selection_sql(terms)} LIMIT ?)"
    )


@functools.lru_cache(maxsize=512)
def list_tasks(
    several: bool,
    descending: bool,
    by_type: bool,
    stored: int,
    unknown: bool,
    limited: bool,
    selected: tuple[bool, ...] = (),
    via: str | None = None,
    names: int = 0,
    id_range: bool = False,
) -> str:
    """A graph's tasks in id order, from an id on (the third parameter), of a type, of
    the `selected` terms of a selection (SELECTION_TERMS), of `stored` statuses and/or those that read
    as `unknown`. Parameters: graphspace, graph, the id, the type, the terms', the
    statuses, KNOWN_VALUES (for `unknown`), the limit. `via`: the index to read (the
    store chooses it for a selection: SQLiteStore._selection_index); `names`: that many
    names in place of a prefix's range (parameters before the terms'); `id_range`: the
    last id to read to (descending: down to), a parameter after the terms', its other
    end given as the page's bound (SQLite reads an index's range from one lower bound
    only: with two, it took the page's 0 and walked every id below the range).

    Several stored statuses (a dashboard's group): left to itself, SQLite walks the graph's
    tasks in id order looking for them, every one of 200,000 when none is in them (130 ms);
    by the status index it reads each status's range, up to the limit each (0.1 ms). One
    status finds that index by itself; unknown cannot use it. Descending, the id is the one
    the page goes on below; the same indexes serve both orders, read backwards."""
    if via is None and several:
        via = "tasks_by_graph_status"
    source = "tasks" if via is None else f"tasks INDEXED BY {via}"
    sql = (
        f"SELECT {TASK_COLUMNS} FROM {source} WHERE graphspace = ? AND graph = ?"
        f" AND id {'<' if descending else '>'} ?"
    )
    if by_type:
        sql += " AND type = ?"
    if names:
        sql += f" AND name IN ({marks(names)})"
    sql += _selection_sql(selected)
    if id_range:  # the other end is the page's bound, the third parameter
        sql += " AND id >= ?" if descending else " AND id <= ?"
    terms = []
    if stored == 1:
        terms.append("status = ?")
    elif stored:
        terms.append(f"status IN ({marks(stored)})")
    if unknown:
        terms.append(UNINTERPRETABLE)
    if terms:
        sql += " AND " + (terms[0] if len(terms) == 1 else f"({' OR '.join(terms)})")
    sql += " ORDER BY id DESC" if descending else " ORDER BY id"
    return sql + " LIMIT ?" if limited else sql


@functools.lru_cache(maxsize=512)
def as_json_array(sql: str) -> str:
    """A task query's rows as one JSON array: a reader thread that builds a Python row per
    result row takes the GIL back once per row."""
    return f"SELECT json_group_array(json_array({TASK_COLUMNS})) FROM ({sql})"


@functools.lru_cache(maxsize=512)
def as_bounded_json_array(sql: str) -> str:
    """As `as_json_array`, but a row whose input and result have more characters than the
    first parameter comes as its id alone."""
    return (
        "SELECT json_group_array(CASE WHEN COALESCE(length(input), 0)"
        f" + COALESCE(length(result), 0) > ? THEN id ELSE json_array({TASK_COLUMNS}) END)"
        f" FROM ({sql})"
    )


@functools.lru_cache(maxsize=512)
def ids_of(sql: str) -> str:
    """The ids of a task query's rows."""
    return f"SELECT id FROM ({sql})"


# --- attempts (schema 9): written in the transaction of the status change that starts or
# ends a run (writer.Tx), read by GET …/tasks/{id}/attempts ---

#: the columns rows.row_to_attempt reads, in its order
ATTEMPT_COLUMNS = (
    "task_id, number, server, replica, start_ms, end_ms, outcome, error_type, error_message,"
    " traceback, checkpoint IS NOT NULL"
)
#: a run starts: the next number of the task's attempts (a scalar subquery: half the cost of
#: INSERT … SELECT max(…)). Parameters: the task's id, its id again, its server, the
#: replica, the time.
START_ATTEMPT = (
    "INSERT INTO attempts (task_id, number, server, replica, start_ms) VALUES"
    " (?, (SELECT coalesce(max(number), 0) + 1 FROM attempts WHERE task_id = ?), ?, ?, ?)"
)
#: a run ends: its open attempt closed (none open: nothing). Parameters: the time, the
#: outcome, the error's type, message and traceback, the checkpoint (NULL: keep), the id.
END_ATTEMPT = (
    "UPDATE attempts SET end_ms = ?, outcome = ?, error_type = ?, error_message = ?,"
    " traceback = ?, checkpoint = coalesce(?, checkpoint)"
    " WHERE task_id = ? AND end_ms IS NULL"
)
#: a running job's checkpoint, into its open attempt. Parameters: the JSON text, the id.
SET_CHECKPOINT = "UPDATE attempts SET checkpoint = ? WHERE task_id = ? AND end_ms IS NULL"
SELECT_ATTEMPTS = f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE task_id = ? ORDER BY number"
#: the task's last checkpoint, whichever attempt stored it
LAST_CHECKPOINT = (
    "SELECT checkpoint FROM attempts WHERE task_id = ? AND checkpoint IS NOT NULL"
    " ORDER BY number DESC LIMIT 1"
)


# --- job types paused as a whole (PUT /types/{type}?action=pause) ---

#: the paused types and since when (epoch ms)
PAUSED_TYPES = "SELECT type, since_ms FROM paused_types ORDER BY type"
#: a type paused (again: it keeps its first time). Parameters: the type, the time
PAUSE_TYPE = "INSERT INTO paused_types (type, since_ms) VALUES (?, ?) ON CONFLICT (type) DO NOTHING"
RESUME_TYPE = "DELETE FROM paused_types WHERE type = ?"
PAUSED_SINCE = "SELECT since_ms FROM paused_types WHERE type = ?"


# --- type_rate_limits: each limited type's starts in its current window ---


@functools.lru_cache(maxsize=64)
def rate_counts(types: int) -> str:
    """The window and count of `types`. Parameters: the types."""
    return f"SELECT type, window_ms, count FROM type_rates WHERE type IN ({marks(types)})"


#: starts counted: a new window starts again from them. Parameters: type, window, count
COUNT_STARTS = (
    "INSERT INTO type_rates (type, window_ms, count) VALUES (?, ?, ?) ON CONFLICT (type) DO"
    " UPDATE SET count = CASE WHEN window_ms = excluded.window_ms THEN count + excluded.count"
    " ELSE excluded.count END, window_ms = excluded.window_ms"
)


# --- log lines (schema 10): appended in batches (SQLiteStore.append_logs), read by
# GET …/tasks/{id}/logs ---

LOG_COLUMNS = "id, time_ms, level, attempt, text"
#: the task's open (or last) attempt's number
CURRENT_ATTEMPT = "SELECT max(number) FROM attempts WHERE task_id = ?"
LAST_LOG_ID = "SELECT coalesce(max(id), 0) FROM log_lines"
INSERT_LOG = (
    "INSERT INTO log_lines (id, task_id, time_ms, level, attempt, text) VALUES (?, ?, ?, ?, ?, ?)"
)
#: the task's count grows by the batch. Parameters: the id, the count; returns the total
#: and the dropped so far
COUNT_LOGS = (
    "INSERT INTO log_counts (task_id, lines, dropped) VALUES (?, ?, 0)"
    " ON CONFLICT (task_id) DO UPDATE SET lines = lines + excluded.lines"
    " RETURNING lines, dropped"
)
#: the task's oldest lines. Parameters: the id, how many
DROP_OLDEST_LOGS = (
    "DELETE FROM log_lines WHERE id IN"
    " (SELECT id FROM log_lines WHERE task_id = ? ORDER BY id LIMIT ?)"
)
SET_LOG_COUNT = "UPDATE log_counts SET lines = ?, dropped = ? WHERE task_id = ?"
#: a page of the task's lines. Parameters: the id, after this line id, the lowest level,
#: how many
SELECT_LOGS = (
    f"SELECT {LOG_COLUMNS} FROM log_lines WHERE task_id = ? AND id > ? AND level >= ?"
    " ORDER BY id LIMIT ?"
)
#: how many lines were dropped, and the first line kept (the marker goes before it)
LOG_STATE = (
    "SELECT dropped, (SELECT min(id) FROM log_lines WHERE task_id = ?)"
    " FROM log_counts WHERE task_id = ?"
)


# --- webhooks (schema 13): the outbox rows written in a status change's transaction
# (writer.Tx.write_deliveries), claimed and answered by service.webhooks ---

INSERT_CALLBACK = "INSERT INTO callbacks (task_id, url) VALUES (?, ?)"


@functools.lru_cache(maxsize=256)
def callbacks_of(ids: int) -> str:
    """The callback URLs of `ids` tasks. Parameters: the ids."""
    return f"SELECT task_id, url FROM callbacks WHERE task_id IN ({marks(ids)})"


#: a new pending delivery, due at once. Parameters: uid, task id, hook, url, status, body,
#: the time (create_ms and next_ms)
INSERT_DELIVERY = (
    "INSERT INTO deliveries (uid, task_id, hook, url, status, body, state, create_ms, next_ms)"
    " VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?)"
)
DELIVERY_COLUMNS = "id, uid, task_id, hook, url, status, body, attempts, create_ms"
#: the due pending deliveries, oldest due first, claimed under a lease: their next_ms moves
#: to the lease's end, so one whose claimer died comes due again. Parameters: the lease's
#: end, its token, now, how many
CLAIM_DELIVERIES = (
    "UPDATE deliveries SET next_ms = ?, lease = ? WHERE id IN"
    " (SELECT id FROM deliveries INDEXED BY deliveries_due"
    "  WHERE state = 'pending' AND next_ms <= ? ORDER BY next_ms LIMIT ?)"
    f" RETURNING {DELIVERY_COLUMNS}"
)
#: a try's outcome, only under the claim it was made under. Parameters: the state, the
#: next time (NULL once it is no longer pending), the id, the lease; returns the tries made
RECORD_DELIVERY = (
    "UPDATE deliveries SET state = ?, next_ms = ?, attempts = attempts + 1, lease = NULL"
    " WHERE id = ? AND lease = ? AND state = 'pending' RETURNING attempts"
)
INSERT_DELIVERY_ANSWER = (
    "INSERT INTO delivery_answers (delivery_id, number, time_ms, code, error, duration_ms)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
SELECT_DELIVERIES = (
    "SELECT id, uid, task_id, hook, url, status, state, attempts, create_ms, next_ms"
    " FROM deliveries WHERE task_id = ? ORDER BY id"
)
SELECT_DELIVERY_ANSWERS = (
    "SELECT a.delivery_id, a.time_ms, a.code, a.error, a.duration_ms FROM delivery_answers a"
    " JOIN deliveries d ON d.id = a.delivery_id WHERE d.task_id = ?"
    " ORDER BY a.delivery_id, a.number"
)
#: when the next pending delivery comes due (NULL: none is pending)
NEXT_DELIVERY = (
    "SELECT min(next_ms) FROM deliveries INDEXED BY deliveries_due WHERE state = 'pending'"
)

# --- schedules (service.schedules; the firing loop is service.scheduler) ---

#: a schedule's columns, in the order rows.row_to_schedule reads them
SCHEDULE_COLUMNS = (
    "graphspace, graph, name, definition, paused, next_fire_ms, anchor_ms, source,"
    " create_ms, update_ms, last_fire_ms, last_task_id"
)
SELECT_SCHEDULES = f"SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY graphspace, graph, name"
SELECT_GRAPH_SCHEDULES = (
    f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE graphspace = ? AND graph = ? ORDER BY name"
)
SELECT_SCHEDULE = (
    f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE graphspace = ? AND graph = ? AND name = ?"
)
#: a new schedule; nothing when the name is taken in the graph
INSERT_SCHEDULE = (
    "INSERT INTO schedules (graphspace, graph, name, definition, paused, next_fire_ms,"
    " anchor_ms, source, create_ms, update_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    f" ON CONFLICT (graphspace, graph, name) DO NOTHING RETURNING {SCHEDULE_COLUMNS}"
)
#: a schedule's new definition: its fire times from now on (a firing under way loses its
#: lease, so it moves nothing on)
REPLACE_SCHEDULE = (
    "UPDATE schedules SET definition = ?, next_fire_ms = CASE WHEN paused THEN NULL ELSE ? END,"
    " anchor_ms = ?, source = ?, update_ms = ?, lease_owner = NULL, lease_until_ms = 0"
    f" WHERE graphspace = ? AND graph = ? AND name = ? RETURNING {SCHEDULE_COLUMNS}"
)
#: pause (next NULL) or resume; a firing under way loses its lease
PAUSE_SCHEDULE = (
    "UPDATE schedules SET paused = ?, next_fire_ms = ?, update_ms = ?, lease_owner = NULL,"
    " lease_until_ms = 0 WHERE graphspace = ? AND graph = ? AND name = ?"
    f" RETURNING {SCHEDULE_COLUMNS}"
)
DELETE_SCHEDULE = (
    "DELETE FROM schedules WHERE graphspace = ? AND graph = ? AND name = ?"
    f" RETURNING {SCHEDULE_COLUMNS}"
)
#: the leases a dead process's firing left (at the start: one process holds the file, so
#: none is held by a live one); a hold with no owner (a firing to be tried again) stays.
#: A leased schedule is a due one (a pause lets go of the lease): read by the due index
RELEASE_SCHEDULE_LEASES = (
    "UPDATE schedules SET lease_owner = NULL, lease_until_ms = 0 WHERE rowid IN"
    " (SELECT rowid FROM schedules INDEXED BY schedules_due"
    "  WHERE next_fire_ms IS NOT NULL AND lease_owner IS NOT NULL)"
)
#: the due schedules no other firing holds, held until ? by ? (at most ? of them)
CLAIM_SCHEDULES = (
    "UPDATE schedules SET lease_owner = ?, lease_until_ms = ? WHERE rowid IN"
    " (SELECT rowid FROM schedules INDEXED BY schedules_due"
    "  WHERE next_fire_ms <= ? AND lease_until_ms <= ? ORDER BY next_fire_ms LIMIT ?)"
    f" RETURNING {SCHEDULE_COLUMNS}"
)
#: a firing's end: the next fire time, what it submitted, and the lease let go (a later
#: hold when it is to be tried again); only by the holder of the lease
ADVANCE_SCHEDULE = (
    "UPDATE schedules SET next_fire_ms = ?, last_fire_ms = coalesce(?, last_fire_ms),"
    " last_task_id = coalesce(?, last_task_id), update_ms = ?, lease_owner = NULL,"
    " lease_until_ms = ? WHERE graphspace = ? AND graph = ? AND name = ? AND lease_owner = ?"
    " AND paused = 0"
)
#: when the firing loop next has something to do: the earliest due time, or the end of a
#: lease that holds a due schedule (NULL: nothing is scheduled)
NEXT_SCHEDULE_DUE = (
    "SELECT min(max(next_fire_ms, lease_until_ms)) FROM schedules INDEXED BY schedules_due"
    " WHERE next_fire_ms IS NOT NULL"
)


# --- dependencies (README, "Dependencies") ---


@functools.lru_cache(maxsize=64)
def dependency_rows(count: int) -> str:
    """The graph and status of `count` tasks a submission names as its dependencies.
    Parameters: the ids."""
    return f"SELECT id, graphspace, graph, status FROM tasks WHERE id IN ({marks(count)})"


#: a new task's dependencies (JSON) and how many of them have not succeeded; parameters:
#: the JSON, the count, the id
SET_DEPENDENCIES = (
    f"UPDATE tasks SET dependencies = ?, waiting_on = ? WHERE id = ? RETURNING {TASK_COLUMNS}"
)
INSERT_DEPENDENCY = "INSERT OR IGNORE INTO dependencies (task_id, depends_on) VALUES (?, ?)"
#: a dependency named once more (its end then looks for the tasks waiting for it)
COUNT_DEPENDANT = "UPDATE tasks SET dependants = dependants + 1 WHERE id = ?"
_DEPENDANTS_OF = "id IN (SELECT task_id FROM dependencies WHERE depends_on = ?)"
#: a dependency succeeded: each task waiting for it waits for one fewer (a task still
#: waiting for others, or already ended, is changed too: its count stays true)
RELEASE_DEPENDANTS = (
    f"UPDATE tasks SET waiting_on = waiting_on - 1 WHERE {_DEPENDANTS_OF} AND waiting_on > 0"
    f" RETURNING {TASK_COLUMNS}"
)
#: the tasks a dependency's failure or cancel (or delete) ends: those that have not started
WAITING_DEPENDANTS = (
    f"SELECT {TASK_COLUMNS} FROM tasks WHERE {_DEPENDANTS_OF} AND waiting_on > 0"
    " AND status IN ('new', 'restoring', 'pending') ORDER BY id"
)
#: the tasks a dependency's end ended (their result names it: one of the two texts)
ENDED_DEPENDANTS = (
    f"SELECT {TASK_COLUMNS} FROM tasks WHERE {_DEPENDANTS_OF}"
    " AND status IN ('failed', 'cancelled') AND result IN (?, ?) ORDER BY id"
)
#: a task's dependencies that have not succeeded (a deleted one holds nobody); parameter:
#: the id
RECOUNT_WAITING = (
    "UPDATE tasks SET waiting_on = (SELECT count(*) FROM dependencies d JOIN tasks t"
    " ON t.id = d.depends_on WHERE d.task_id = tasks.id AND t.status != 'success')"
    f" WHERE id = ? RETURNING {TASK_COLUMNS}"
)
#: the re-check of tasks waiting for a dependency, one statement a batch: each one's id,
#: status, count, how many of its dependencies have not succeeded (a deleted one holds
#: nobody) and whether one ended failed or cancelled. The batch's part is given by the
#: caller: WAITING_AFTER (id order after ?, at most ?) or waiting_of (given ids).
_RECHECK = (
    "SELECT t.id, t.status, t.waiting_on,"
    " coalesce(sum(d.status IS NOT NULL AND d.status != 'success'), 0),"
    " coalesce(max(d.status IN ('failed', 'cancelled')), 0)"
    " FROM ({}) AS t LEFT JOIN dependencies e ON e.task_id = t.id"
    " LEFT JOIN tasks d ON d.id = e.depends_on GROUP BY t.id ORDER BY t.id"
)
RECHECK_AFTER = _RECHECK.format(
    "SELECT id, status, waiting_on FROM tasks INDEXED BY tasks_waiting_on WHERE waiting_on > 0"
    " AND id > ? ORDER BY id LIMIT ?"
)


@functools.lru_cache(maxsize=64)
def recheck_of(count: int) -> str:
    """RECHECK_AFTER of `count` given ids. Parameters: the ids."""
    return _RECHECK.format(
        f"SELECT id, status, waiting_on FROM tasks WHERE waiting_on > 0 AND id IN ({marks(count)})"
    )


#: a task's dependencies and their statuses (NULL: deleted)
DEPENDENCY_STATUSES = (
    "SELECT d.depends_on, t.status FROM dependencies d LEFT JOIN tasks t ON t.id = d.depends_on"
    " WHERE d.task_id = ? ORDER BY d.depends_on"
)
