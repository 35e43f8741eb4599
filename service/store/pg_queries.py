"""Every SQL statement of the PostgreSQL store, by name (the twin of service.store.queries).
A list of values is one array parameter (`= ANY($n)`), so no statement's shape depends on
how many ids or statuses a call carries, and asyncpg prepares each statement once."""

from __future__ import annotations

import functools
import re

from ..model import Status
from .queries import TASK_COLUMNS

#: the columns a status change may set, and their SQL types (for a batch's unnest)
FIELD_TYPES = {
    "progress": "bigint",
    "progress_total": "bigint",
    "result": "text",
    "retries": "bigint",
    "run_after_ms": "bigint",
    "server": "text",
    "description": "text",
}
#: every known status value: a row in none of them reads as `unknown`
KNOWN_VALUES = [s.value for s in Status if s is not Status.UNKNOWN]
#: true in SQL for exactly the rows rows.row_to_task reads as `unknown` (with typed columns
#: only a status this version does not know, or an input that is not JSON); its parameter
#: is KNOWN_VALUES, numbered by the caller
UNINTERPRETABLE = (
    "(status <> ALL(${n}::text[]) OR (input IS NOT NULL AND NOT sidetask_is_json(input)))"
)

# --- schema ---

VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)"
SELECT_VERSION = "SELECT coalesce(max(version), 0) FROM schema_version"
SET_VERSION = "DELETE FROM schema_version; INSERT INTO schema_version VALUES ({version})"
#: taken by whoever migrates the schema, for the rest of its transaction
MIGRATE_LOCK = "SELECT pg_advisory_xact_lock(hashtext($1 || '.migrate'))"

# --- replicas ---

REGISTER = (
    "INSERT INTO replicas (id, host, pid, lock_key, started_ms, heartbeat_ms)"
    " VALUES ($1, $2, $3, $4, sidetask_now_ms(), sidetask_now_ms())"
)
#: held by the writer's session while the process lives (a former identity's let go)
HOLD_LIFE = "SELECT pg_advisory_unlock_all(), pg_advisory_lock($1)"
#: the writer's session is ended when left in a transaction this long ($1: ms, as text)
IDLE_IN_TRANSACTION_LIMIT = "SELECT set_config('idle_in_transaction_session_timeout', $1, false)"
#: this process is alive; no row: it was declared dead (its tasks went to the others)
HEARTBEAT = "UPDATE replicas SET heartbeat_ms = sidetask_now_ms() WHERE id = $1"
UNREGISTER = "DELETE FROM replicas WHERE id = $1"
#: one sweep at a time across the replicas; the others skip theirs
TRY_SWEEP = "SELECT pg_try_advisory_xact_lock(hashtext(current_schema() || '.sweep'))"
#: processes whose heartbeat is older than the timeout (ms), or whose session no longer
#: holds their life lock (it can be taken: taken and given back at once), are dead: their
#: rows go. $2: this process (whose own lock its session could take again).
FORGET_DEAD = (
    "DELETE FROM replicas WHERE id <> $2 AND (heartbeat_ms < sidetask_now_ms() - $1"
    " OR CASE WHEN pg_try_advisory_lock(lock_key) THEN pg_advisory_unlock(lock_key)"
    " ELSE false END)"
)
#: a task held by a live process other than this one (a cancel must reach it there)
HELD_ELSEWHERE = (
    "SELECT EXISTS (SELECT 1 FROM tasks t JOIN replicas r ON r.id = t.owner"
    " WHERE t.id = $1 AND t.owner <> $2 AND t.status = ANY($3::text[]))"
)

# --- tasks ---

SELECT_TASK = f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"
SELECT_BY_IDEMPOTENCY_KEY = (
    f"SELECT {TASK_COLUMNS}, idempotency_fingerprint FROM tasks"
    " WHERE graphspace = $1 AND graph = $2 AND idempotency_key = $3"
)
# ON CONFLICT: another process may insert the same key meanwhile; then nothing is inserted
# and the caller reads the row that won.
INSERT_TASK = (
    "INSERT INTO tasks (graphspace, graph, name, type, callable, status, create_ms,"
    " update_ms, input, max_retries, priority, timeout, run_after_ms, idempotency_key,"
    " idempotency_fingerprint, traceparent, tracestate)"
    " VALUES ($1, $2, $3, $4, $5, 'new', $6, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
    " ON CONFLICT (graphspace, graph, idempotency_key) WHERE idempotency_key IS NOT NULL"
    f" DO NOTHING RETURNING {TASK_COLUMNS}"
)
#: a schedule's task: the schedule and the fire time, in the insert's transaction
SET_TASK_SCHEDULE = (
    f"UPDATE tasks SET schedule = $1, schedule_fire_ms = $2 WHERE id = $3 RETURNING {TASK_COLUMNS}"
)
#: a run of new tasks without an Idempotency-Key, one per element of the arrays, each with
#: the next id (taken in the statement: no round trip of its own), back in their order
#: ($1: their places, 0, 1, …)
INSERT_TASKS = (
    "WITH u AS (SELECT nextval(pg_get_serial_sequence('tasks', 'id')) AS id, v.*"
    " FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],"
    " $8::text[], $9::bigint[], $10::bigint[], $11::float8[], $12::bigint[], $13::text[],"
    " $14::text[])"
    " AS v(n, graphspace, graph, name, type, callable, input, max_retries, priority, timeout,"
    " run_after_ms, traceparent, tracestate)),"
    " made AS (INSERT INTO tasks (id, graphspace, graph, name, type, callable, status,"
    " create_ms, update_ms, input, max_retries, priority, timeout, run_after_ms, traceparent,"
    " tracestate)"
    " SELECT u.id, u.graphspace, u.graph, u.name, u.type, u.callable, 'new', $7, $7, u.input,"
    " u.max_retries, u.priority, u.timeout, u.run_after_ms, u.traceparent, u.tracestate"
    f" FROM u RETURNING {TASK_COLUMNS})"
    " SELECT made.*, u.n FROM made JOIN u ON u.id = made.id ORDER BY u.n"
)
# only the process running the task reports its progress: fenced by its id ($5)
SET_PROGRESS = (
    "UPDATE tasks SET progress = $1, progress_total = coalesce($2, progress_total),"
    " update_ms = $3 WHERE id = $4 AND status IN ('running', 'cancelling')"
    " AND (owner = $5 OR owner IS NULL)"
    " AND (progress <> $1 OR coalesce($2, progress_total) IS DISTINCT FROM progress_total)"
    f" RETURNING {TASK_COLUMNS}"
)
DELETE_TASK = "DELETE FROM tasks WHERE id = $1"
DELETE_TASK_FROM = "DELETE FROM tasks WHERE id = $1 AND status = ANY($2::text[])"
#: a graph's tasks by id, from the statuses $4 (NULL: any), as DELETE_TASK_FROM; the status
#: condition written so no index serves it, as _from_status's. Parameters: graphspace,
#: graph, the ids, the statuses
DELETE_TASKS = (
    "DELETE FROM tasks WHERE graphspace = $1 AND graph = $2 AND id = ANY($3::bigint[])"
    f" AND (status = ANY($4::text[])) IS NOT FALSE RETURNING {TASK_COLUMNS}"
)
SET_PROCESS_GROUP = (
    "UPDATE tasks SET process_group = $1, process_token = $2, process_host = $3 WHERE id = $4"
)
#: process groups on this machine ($1) of tasks no live process holds: a dead one's
PROCESS_GROUPS = (
    "SELECT id, process_group, process_token FROM tasks WHERE process_group IS NOT NULL"
    " AND process_host = $1"
    " AND (owner IS NULL OR NOT EXISTS (SELECT 1 FROM replicas r WHERE r.id = tasks.owner))"
)


def _fence(claims: bool, fenced: bool, n: int, table: str = "") -> tuple[str, str]:
    """The owner's part of a status change: a claim makes this process the owner (`SET`);
    a fenced change applies only while no other process is it (`WHERE`: a row nobody
    claimed, written by hand or by an older version, has none). Parameter n: this
    process's id. The condition is written so that no index on `owner` serves it: the
    rows come by their ids (the primary key), not by a scan of the in-hand index, whose
    entries for rows that left it stay until a vacuum (one per step of every task run)."""
    assignment = f", owner = ${n}" if claims else ""
    condition = f" AND coalesce({table}owner, ${n}) = ${n}" if fenced else ""
    return assignment, condition


def _from_status(n: int, table: str = "") -> str:
    """The compare-and-set's condition on the status a change starts from (parameter n:
    the sources), written so that no index serves it: the rows come by their ids (the
    primary key). Written plainly, the planner, its statistics behind a table that grows
    by thousands a second, AND-ed the ids with a bitmap scan of every task of that status
    in tasks_by_status_type: 13,520 entries for 16 tasks, 1.5 ms of every part of every
    status step's statement with a backlog of new tasks (scripts/bench, row 9)."""
    return f"({table}status = ANY(${n}::text[])) IS TRUE"


@functools.lru_cache(maxsize=256)
def change_status(fields: tuple[str, ...], claims: bool = False, fenced: bool = False) -> str:
    """The compare-and-set UPDATE of a status change setting `fields` (the same values on
    every task). Parameters: target, now, the fields' values, the ids, the sources, and
    this process's id when it `claims` the tasks or the change is `fenced` by it."""
    assignments = "".join(f", {name} = ${i}" for i, name in enumerate(fields, start=3))
    n = len(fields) + 3
    owner_set, owner_where = _fence(claims, fenced, n + 2)
    return (
        f"UPDATE tasks SET status = $1, update_ms = $2{assignments}{owner_set}"
        f" WHERE id = ANY(${n}::bigint[]) AND {_from_status(n + 1)}{owner_where}"
        f" RETURNING {TASK_COLUMNS}"
    )


@functools.lru_cache(maxsize=256)
def change_status_rows(fields: tuple[str, ...], claims: bool = False, fenced: bool = False) -> str:
    """`change_status` for tasks that each set `fields` to values of their own (a batch of
    job ends, each with its result): the values come as arrays, one per column. Parameters:
    target, now, the ids, each field's values, the sources, this process's id."""
    columns = ", ".join(["id", *fields])
    arrays = ", ".join(
        ["$3::bigint[]", *(f"${i}::{FIELD_TYPES[f]}[]" for i, f in enumerate(fields, start=4))]
    )
    assignments = "".join(f", {name} = v.{name}" for name in fields)
    n = len(fields) + 4
    owner_set, owner_where = _fence(claims, fenced, n + 1, "tasks.")
    returning = ", ".join(f"tasks.{c.strip()}" for c in TASK_COLUMNS.split(","))
    return (
        f"UPDATE tasks SET status = $1, update_ms = $2{assignments}{owner_set}"
        f" FROM unnest({arrays}) AS v({columns})"
        f" WHERE tasks.id = v.id AND {_from_status(n, 'tasks.')}{owner_where}"
        f" RETURNING {returning}"
    )


# Waiting tasks whose due time has come join the due ones (run_after_ms 0: the claim
# index), as in SQLite. A row another transaction holds is passed over, not waited for:
# every process's claims run this, in transactions whose other writes take rows and the
# admission lock in their own order, and waiting here closed deadlocks between processes
# (a stall of deadlock_timeout, then a batch redone); a later claim makes it due.
# Parameters: now.
RELEASE_DUE = (
    "UPDATE tasks SET run_after_ms = 0 WHERE id IN (SELECT id FROM tasks"
    " WHERE status IN ('new', 'restoring') AND run_after_ms > 0 AND run_after_ms <= $1"
    " FOR UPDATE SKIP LOCKED)"
)
# Due waiting tasks in claim order, of the types this process runs, not of excluded types
# nor damaged ids; SKIP LOCKED: a row another process is claiming is passed over, not
# waited for. Parameters: the excluded types, the damaged ids, the limit, the types run
# here (NULL: any).
CLAIM_WAITING = (
    "SELECT id, status, type FROM tasks"
    " WHERE status IN ('new', 'restoring') AND run_after_ms = 0 AND waiting_on = 0"
    # the paused types, read in the claim's own statement (an uncorrelated subquery, run
    # once): every replica obeys the table as it is at its claim
    " AND type <> ALL($1::text[] || ARRAY(SELECT type FROM paused_types))"
    " AND id <> ALL($2::bigint[])"
    " AND ($4::text[] IS NULL OR type = ANY($4::text[]))"
    " ORDER BY priority DESC, id LIMIT $3 FOR UPDATE SKIP LOCKED"
)
# The claim in one statement (the release of due tasks, the pick and the step to
# `scheduling`): due waiting tasks in claim order, the waiting ones (the claim index) and
# the delayed ones whose time has come, SKIP LOCKED as CLAIM_WAITING; those picked go
# `scheduling` under this process, due at once (run_after_ms 0), and the other delayed
# ones whose time has come are released as RELEASE_DUE does. Used when no type's room is
# short of the limit (a type with less room is counted row by row: CLAIM_WAITING).
# Parameters: now, the update's time, the server (NULL: left as it is), this process's id,
# the sources of `scheduling`, the excluded types, the limit, the types run here (NULL:
# any).
_DUE_FILTER = (
    " AND type <> ALL($6::text[] || ARRAY(SELECT type FROM paused_types))"
    " AND ($8::text[] IS NULL OR type = ANY($8::text[]))"
)


def _claim_due(exclude: bool) -> tuple[str, str]:
    """CLAIM_DUE's CTEs and its UPDATE; with `exclude`, passing over the ids $9 (the
    tasks the statement it is a part of changes: no row is changed twice in one)."""
    skip = " AND id <> ALL($9::bigint[])" if exclude else ""
    ctes = (
        "waiting AS (SELECT id, priority FROM tasks"
        f" WHERE status IN ('new', 'restoring') AND run_after_ms = 0 AND waiting_on = 0{skip}"
        f"{_DUE_FILTER} ORDER BY priority DESC, id LIMIT $7 FOR UPDATE SKIP LOCKED),"
        " delayed AS (SELECT id, priority FROM tasks"
        " WHERE status IN ('new', 'restoring') AND run_after_ms > 0 AND run_after_ms <= $1"
        f" AND waiting_on = 0{skip}{_DUE_FILTER} ORDER BY priority DESC, id LIMIT $7"
        " FOR UPDATE SKIP LOCKED),"
        " found AS (SELECT id FROM (SELECT * FROM waiting UNION ALL SELECT * FROM delayed)"
        " AS due ORDER BY priority DESC, id LIMIT $7),"
        " released AS (UPDATE tasks SET run_after_ms = 0 WHERE id IN (SELECT id FROM tasks"
        " WHERE status IN ('new', 'restoring') AND run_after_ms > 0 AND run_after_ms <= $1"
        f"{skip} AND id NOT IN (SELECT id FROM found) FOR UPDATE SKIP LOCKED))"
    )
    update = (
        "UPDATE tasks SET status = 'scheduling', update_ms = $2, server = coalesce($3, server),"
        " owner = $4, run_after_ms = 0 FROM found"
        f" WHERE tasks.id = found.id AND {_from_status(5, 'tasks.')}"
        " RETURNING " + ", ".join(f"tasks.{c.strip()}" for c in TASK_COLUMNS.split(","))
    )
    return ctes, update


CLAIM_DUE = "WITH {} {}".format(*_claim_due(False))
#: parameters of the claim as a part of change_statuses (CLAIM_DUE's and the ids changed)
CLAIM_PARAMS = 9
#: every submission takes it when max_waiting is set, till its commit: the count stays true
ADMIT_LOCK = "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.admit'))"
#: tasks waiting to run, across the cluster ($1: the waiting statuses)
COUNT_WAITING = "SELECT count(*) FROM tasks WHERE status = ANY($1::text[])"
#: every claim of a capped type takes it, till its commit: the counts below stay true
CLAIM_LOCK = "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.claim'))"
#: tasks of these types ($1) in hand of any process ($2: the statuses of a task in hand)
IN_HAND_BY_TYPE = (
    "SELECT type, count(*) FROM tasks WHERE type = ANY($1::text[]) AND status = ANY($2::text[])"
    " GROUP BY type"
)

# Tasks in hand of no live process (it died, or stopped without handing them back), but
# those of kept types held under a lease, and those whose command's process group is still
# recorded: the task must not run again while its command may still run, and only a
# process on the group's machine can stop it (each replica stops and clears the groups of
# its machine whose owner is gone, PROCESS_GROUPS, before it sweeps; a group of an owner
# this very sweep forgets waits for the next one). Locked, so nobody claims or ends one
# while it is recovered. Parameters: the interruptible statuses, the kept types.
INTERRUPTED = (
    f"SELECT {TASK_COLUMNS} FROM tasks WHERE status = ANY($1::text[])"
    " AND (owner IS NULL OR NOT EXISTS (SELECT 1 FROM replicas r WHERE r.id = tasks.owner))"
    " AND (type <> ALL($2::text[]) OR lease_expires_ms IS NULL)"
    " AND process_group IS NULL"
    " ORDER BY id FOR UPDATE SKIP LOCKED"
)
#: one purge at a time across the replicas
TRY_PURGE = "SELECT pg_try_advisory_xact_lock(hashtext(current_schema() || '.purge'))"
#: another live process shares the schema ($1: this one)
OTHERS_ALIVE = "SELECT EXISTS (SELECT 1 FROM replicas WHERE id <> $1)"
PURGEABLE_TASKS = (
    f"SELECT {TASK_COLUMNS} FROM tasks"
    " WHERE status = ANY($1::text[]) AND update_ms < $2 ORDER BY update_ms LIMIT $3"
)
# Event ids grow with time, so the oldest events are the first ids.
PURGE_EVENTS = (
    "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT $1) AND create_ms < $2"
)

# --- external workers' leases ---

NEXT_LEASABLE = (
    "SELECT id FROM tasks WHERE status IN ('new', 'restoring') AND run_after_ms = 0"
    " AND waiting_on = 0 AND type = ANY($1::text[]) AND id <> ALL($2::bigint[])"
    " AND type <> ALL(ARRAY(SELECT type FROM paused_types))"
    " ORDER BY priority DESC, id LIMIT 1 FOR UPDATE SKIP LOCKED"
)
NEXT_DUE = (
    "SELECT min(run_after_ms) FROM tasks WHERE status IN ('new', 'restoring')"
    " AND run_after_ms > 0 AND type = ANY($1::text[]) AND id <> ALL($2::bigint[])"
)
#: whether a due waiting task of the type ($1) waits, not of the ids ($2): a lease that a
#: rate limit held back reads it, without taking the row
HAS_DUE = (
    "SELECT EXISTS (SELECT 1 FROM tasks WHERE status IN ('new', 'restoring') AND run_after_ms = 0"
    " AND waiting_on = 0 AND type = $1 AND id <> ALL($2::bigint[])"
    " AND type <> ALL(ARRAY(SELECT type FROM paused_types)))"
)
SET_LEASE = "UPDATE tasks SET lease = $1, lease_expires_ms = $2 WHERE id = $3"
SELECT_LEASED = f"SELECT {TASK_COLUMNS}, lease, lease_expires_ms FROM tasks WHERE id = $1"
REPORT_PROGRESS = (
    f"UPDATE tasks SET progress = $1, update_ms = $2 WHERE id = $3 RETURNING {TASK_COLUMNS}"
)
EXTEND_LEASE = "UPDATE tasks SET lease_expires_ms = $1 WHERE id = $2"
END_LEASE = "UPDATE tasks SET lease_expires_ms = NULL WHERE id = $1"
DROP_LEASE = "UPDATE tasks SET lease = NULL, lease_expires_ms = NULL WHERE id = $1"
# Parameters: now, the leased statuses, the types.
EXPIRED_LEASES = (
    f"SELECT {TASK_COLUMNS} FROM tasks WHERE lease_expires_ms <= $1"
    " AND status = ANY($2::text[]) AND type = ANY($3::text[]) ORDER BY lease_expires_ms"
)
# Parameters: the leased statuses, the types.
UNLEASED = (
    f"SELECT {TASK_COLUMNS} FROM tasks WHERE status = ANY($1::text[])"
    " AND type = ANY($2::text[]) AND lease_expires_ms IS NULL ORDER BY id"
)
# Parameters: the time, the leased statuses, the types.
RENEW_LEASES = (
    "UPDATE tasks SET lease_expires_ms = greatest(lease_expires_ms, $1)"
    " WHERE lease_expires_ms IS NOT NULL AND status = ANY($2::text[])"
    " AND type = ANY($3::text[])"
)

# --- events ---

APPEND_EVENTS = "SELECT sidetask_append_events($1, $2, $3, $4, $5, $6, $7, $8)"
EVENT_COLUMNS = "id, kind, task_id, graphspace, graph, task_type, status, data"
LAST_EVENT_ID = "SELECT coalesce(max(id), 0) FROM events"
#: what the event pump reads: every event after the last one it gave out, in id order
PUMP = f"SELECT {EVENT_COLUMNS} FROM events WHERE id > $1 ORDER BY id LIMIT $2"
#: the same, below an id ($3): the others' events before one of this process's commits
PUMP_BEFORE = f"SELECT {EVENT_COLUMNS} FROM events WHERE id > $1 AND id < $3 ORDER BY id LIMIT $2"


@functools.lru_cache(maxsize=16)
def events_after(by_task: bool, by_graph: bool, bounded: bool) -> str:
    """Events after an id, in id order, of one task and/or graph. Parameters: the id, the
    task id, graphspace and graph (those asked), the limit, and when `bounded` the bytes:
    only the events that start within that many bytes of data (the first always: nothing
    comes before it)."""
    where = "id > $1"
    n = 2
    if by_task:
        where += f" AND task_id = ${n}"
        n += 1
    if by_graph:
        where += f" AND graphspace = ${n} AND graph = ${n + 1}"
        n += 2
    page = f"SELECT {EVENT_COLUMNS} FROM events WHERE {where} ORDER BY id LIMIT ${n}"
    if not bounded:
        return page
    return (
        f"SELECT {EVENT_COLUMNS} FROM (SELECT *, sum(octet_length(data)) OVER (ORDER BY id"
        f" ROWS UNBOUNDED PRECEDING) - octet_length(data) AS before FROM ({page}) AS p) AS s"
        f" WHERE before = 0 OR before < ${n + 1} ORDER BY id"
    )


# --- reads ---

COUNT_BY_STATUS_TYPE = "SELECT status, type, count(*) FROM tasks GROUP BY status, type"
COUNT_GRAPH_STATUSES = (
    "SELECT status, count(*) FROM tasks WHERE graphspace = $1 AND graph = $2 GROUP BY status"
)
GRAPH_TASKS_BY_ID = (
    f"SELECT {TASK_COLUMNS} FROM tasks WHERE graphspace = $1 AND graph = $2"
    " AND id = ANY($3::bigint[]) ORDER BY id"
)


#: the first name of a prefix's range, and the next one after it (the name index's next
#: entries, in task_keys: schema 11). Parameters: graphspace, graph, the range's start (the
#: name it goes on from), its end
FIRST_NAME = (
    'SELECT name FROM task_keys WHERE graphspace = $1 AND graph = $2 AND name COLLATE "C" >= $3'
    ' AND name COLLATE "C" < $4 ORDER BY name COLLATE "C" LIMIT 1'
)
NEXT_NAME = FIRST_NAME.replace('name COLLATE "C" >= $3', 'name COLLATE "C" > $3')
#: how many of a graph's tasks a time range holds, and their lowest and highest id, up to
#: a limit ({table}: task_keys for the creation time, by its index there, tasks for the
#: update's; {terms}: the range). Parameters: graphspace, graph, the range's, the limit
IDS_SELECTED = (
    "SELECT count(*), min(id), max(id) FROM (SELECT id FROM {table}"
    " WHERE graphspace = $1 AND graph = $2{terms} LIMIT ${limit}) s"
)
#: a Selection's terms, in the order Selection.terms gives their parameters ({n}:
#: the parameter's number); the name in byte order, as its index (schema 6) holds it
SELECTION_TERMS = (
    'name COLLATE "C" >= ${n}',
    'name COLLATE "C" < ${n}',
    "create_ms >= ${n}",
    "create_ms < ${n}",
    "update_ms >= ${n}",
    "update_ms < ${n}",
)
#: which of SELECTION_TERMS a list reads from a task's keys (task_keys), by the name
#: index. Not the creation time's: the store gives a time range of a few tasks as their
#: first and last id (IDS_SELECTED, which reads its index in task_keys), and a list reads
#: those ids by the primary key, the range a filter of each row (joined, PostgreSQL's
#: planner sorted the whole range: 170 ms for one day, 29 ms without the join)
KEY_TERMS = (True, True, False, False, False, False)
#: task_keys in a list's join, its columns named apart from the tasks' (which the list's
#: columns and its other terms name unqualified)
KEYS_JOINED = "JOIN task_keys AS k (k_id, k_graphspace, k_graph, k_type, k_name, k_create_ms)"


def _on_keys(term: str) -> str:
    """A key's term as the join names it."""
    return "k_" + term


@functools.lru_cache(maxsize=256)
def list_tasks(
    descending: bool,
    by_type: bool,
    stored: bool,
    unknown: bool,
    bounded: bool,
    selected: tuple[bool, ...] = (),
    one_name: bool = False,
    id_range: bool = False,
) -> str:
    """A graph's tasks in id order from an id on, of a type, of a selection's `selected` terms
    (SELECTION_TERMS), of stored statuses and/or those that read as `unknown`.
    Parameters: graphspace, graph, the id, then those asked for: the type, the terms',
    the statuses (an array), KNOWN_VALUES (for `unknown`), then the limit, and with
    `bounded` the characters of input and result past which a row comes as its id alone
    (its input and result left out, and `large` true)."""
    after = "<" if descending else ">"
    sql = f"graphspace = $1 AND graph = $2 AND id {after} $3"
    # A filter on a task's keys reads their indexes (task_keys, joined by id); the graph,
    # the id it goes on from and an id range are on both sides, so either side may lead.
    keyed = (on and key for on, key in zip(selected, KEY_TERMS, strict=False))
    # and a list of a whole graph (no status, no update range, no ids to read between),
    # read in id order by task_keys' graph index (schema 12)
    whole = not (stored or unknown or id_range or any(selected[4:6]))
    keys = by_type or one_name or any(keyed) or whole
    if keys:
        sql += f" AND k_graphspace = $1 AND k_graph = $2 AND k_id {after} $3"
    n = 4
    if by_type:
        sql += f" AND k_type = ${n}"
        n += 1
    if one_name:  # the one name a prefix's range holds, in place of the range
        sql += f' AND k_name COLLATE "C" = ${n}'
        n += 1
    for term, on, key in zip(SELECTION_TERMS, selected, KEY_TERMS, strict=False):
        if on:
            sql += " AND " + (_on_keys(term) if key else term).format(n=n)
            n += 1
    if id_range:  # the first and last id a time range holds
        sql += f" AND id >= ${n} AND id <= ${n + 1}"
        if keys:
            sql += f" AND k_id >= ${n} AND k_id <= ${n + 1}"
        n += 2
    terms = []
    if stored:
        terms.append(f"status = ANY(${n}::text[])")
        n += 1
    if unknown:
        terms.append(UNINTERPRETABLE.format(n=n))
        n += 1
    if terms:
        sql += " AND " + (terms[0] if len(terms) == 1 else f"({' OR '.join(terms)})")
    order = " ORDER BY id DESC" if descending else " ORDER BY id"
    source = f"tasks {KEYS_JOINED} ON k_id = id" if keys else "tasks"
    if not bounded:
        return f"SELECT {TASK_COLUMNS} FROM {source} WHERE {sql}{order} LIMIT ${n}"
    size = "coalesce(length(input), 0) + coalesce(length(result), 0)"
    columns = TASK_COLUMNS.replace(
        "result, input",
        f"CASE WHEN {size} > ${n + 1} THEN NULL ELSE result END,"
        f" CASE WHEN {size} > ${n + 1} THEN NULL ELSE input END",
    )
    return (
        f"SELECT {columns}, {size} > ${n + 1} AS large FROM {source} WHERE {sql}{order} LIMIT ${n}"
    )


# --- attempts (schema 2): written in the transaction of the status change that starts or
# ends a run (PgTx), read by GET …/tasks/{id}/attempts ---

#: the columns rows.row_to_attempt reads, in its order
ATTEMPT_COLUMNS = (
    "task_id, number, server, replica, start_ms, end_ms, outcome, error_type, error_message,"
    " traceback, checkpoint IS NOT NULL"
)
#: runs start: each task's next attempt number. Parameters: the ids, their servers, the
#: replica (host:pid), this process's id, the time.
START_ATTEMPTS = (
    "INSERT INTO attempts (task_id, number, server, replica, owner, start_ms)"
    " SELECT s.task_id, coalesce((SELECT max(a.number) FROM attempts a"
    " WHERE a.task_id = s.task_id), 0) + 1, s.server, $3, $4, $5"
    " FROM unnest($1::bigint[], $2::text[]) AS s(task_id, server)"
)
#: runs end: each task's open attempt closed (none open: nothing). Parameters: the time,
#: the ids, outcomes, error types, messages, tracebacks, checkpoints (NULL: keep).
END_ATTEMPTS = (
    "UPDATE attempts a SET end_ms = $1, outcome = e.outcome, error_type = e.error_type,"
    " error_message = e.error_message, traceback = e.traceback,"
    " checkpoint = coalesce(e.checkpoint, a.checkpoint)"
    " FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])"
    " AS e(task_id, outcome, error_type, error_message, traceback, checkpoint)"
    " WHERE a.task_id = e.task_id AND a.end_ms IS NULL"
)


def _shift(sql: str, by: int) -> str:
    """`sql` with its parameters numbered from `by` + 1 (a part of a larger statement)."""
    return re.sub(r"\$(\d+)", lambda m: f"${int(m[1]) + by}", sql)


#: a part's runs start (change_statuses): its applied tasks among the ids get their next
#: attempt. Parameters: the replica (host:pid), this process's id, the time, the ids.
_STARTS_OF = (
    "INSERT INTO attempts (task_id, number, server, replica, owner, start_ms)"
    " SELECT u.id, coalesce((SELECT max(a.number) FROM attempts a"
    " WHERE a.task_id = u.id), 0) + 1, u.server, $1, $2, $3"
    " FROM {part} AS u WHERE u.id = ANY($4::bigint[])"
)
#: a part's runs end (change_statuses): its applied tasks' open attempts closed.
#: Parameters: as END_ATTEMPTS.
_ENDS_OF = (
    "UPDATE attempts a SET end_ms = $1, outcome = e.outcome, error_type = e.error_type,"
    " error_message = e.error_message, traceback = e.traceback,"
    " checkpoint = coalesce(e.checkpoint, a.checkpoint)"
    " FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])"
    " AS e(task_id, outcome, error_type, error_message, traceback, checkpoint)"
    " JOIN {part} AS u ON u.id = e.task_id"
    " WHERE a.task_id = e.task_id AND a.end_ms IS NULL"
)
#: parameters of _STARTS_OF and _ENDS_OF
STARTS_PARAMS = 4
ENDS_PARAMS = 7


@functools.lru_cache(maxsize=256)
def change_statuses(parts: tuple[tuple[str, int, bool, bool], ...], claim: bool = False) -> str:
    """Status changes of several shapes, and the attempts they start and end, as one
    statement: each part is (its UPDATE, the UPDATE's parameter count, whether runs start,
    whether runs end), a data-modifying CTE of its own (the parts change different
    tasks); the rows every part changed come back. Parameters: each part's, then its
    starts' (_STARTS_OF) and ends' (_ENDS_OF), part after part. With `claim`, a claim
    (CLAIM_DUE) goes in last, passing over the tasks the parts change (CLAIM_PARAMS: its
    own, then those tasks' ids), and each row comes with whether it is claimed."""
    ctes: list[str] = []
    selects: list[str] = []
    n = 0
    for k, (update, count, starts, ends) in enumerate(parts):
        ctes.append(f"u{k} AS ({_shift(update, n)})")
        selects.append(f"SELECT * FROM u{k}")
        n += count
        if starts:
            ctes.append(f"s{k} AS ({_shift(_STARTS_OF.format(part=f'u{k}'), n)})")
            n += STARTS_PARAMS
        if ends:
            ctes.append(f"e{k} AS ({_shift(_ENDS_OF.format(part=f'u{k}'), n)})")
            n += ENDS_PARAMS
    if claim:  # the claim too (CLAIM_DUE), last: every row comes with whether it is claimed
        claim_ctes, claim_update = _claim_due(exclude=True)
        ctes.extend([_shift(claim_ctes, n), f"c AS ({_shift(claim_update, n)})"])
        selects = [select.replace(" *", " *, false", 1) for select in selects]
        selects.append("SELECT *, true FROM c")
    return f"WITH {', '.join(ctes)} {' UNION ALL '.join(selects)}"


#: running jobs' checkpoints, into their open attempts, only those this process ($3)
#: started. Parameters: the ids, the JSON texts, this process's id.
SET_CHECKPOINTS = (
    "UPDATE attempts a SET checkpoint = c.checkpoint"
    " FROM unnest($1::bigint[], $2::text[]) AS c(task_id, checkpoint)"
    " WHERE a.task_id = c.task_id AND a.end_ms IS NULL AND a.owner = $3"
)
#: an external worker's checkpoint, into its task's open attempt: the lease (checked in the
#: same transaction) fences it, not the replica that took the report. Parameters: the JSON
#: text, the id
SET_LEASED_CHECKPOINT = "UPDATE attempts SET checkpoint = $1 WHERE task_id = $2 AND end_ms IS NULL"
SELECT_ATTEMPTS = f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE task_id = $1 ORDER BY number"
LAST_CHECKPOINT = (
    "SELECT checkpoint FROM attempts WHERE task_id = $1 AND checkpoint IS NOT NULL"
    " ORDER BY number DESC LIMIT 1"
)


# --- job types paused as a whole, as SQLite's ---

PAUSED_TYPES = "SELECT type, since_ms FROM paused_types ORDER BY type"
PAUSE_TYPE = (
    "INSERT INTO paused_types (type, since_ms) VALUES ($1, $2) ON CONFLICT (type) DO NOTHING"
)
RESUME_TYPE = "DELETE FROM paused_types WHERE type = $1"
PAUSED_SINCE = "SELECT since_ms FROM paused_types WHERE type = $1"

# --- type_rate_limits, as SQLite's; read and written under CLAIM_LOCK ---

#: each limited type's window and count, with the database's clock (every replica counts
#: windows on one clock). Parameters: the types
RATE_COUNTS = (
    "SELECT t.type, r.window_ms, r.count, sidetask_now_ms() FROM unnest($1::text[]) AS t(type)"
    " LEFT JOIN type_rates r ON r.type = t.type"
)
#: Parameters: the types, their windows, the starts to add
COUNT_STARTS = (
    "INSERT INTO type_rates AS r (type, window_ms, count)"
    " SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])"
    " ON CONFLICT (type) DO UPDATE SET count = CASE WHEN r.window_ms = excluded.window_ms"
    " THEN r.count + excluded.count ELSE excluded.count END, window_ms = excluded.window_ms"
)


# --- log lines (schema 3): appended in batches (PostgresStore.append_logs), read by
# GET …/tasks/{id}/logs ---

LOG_COLUMNS = "id, time_ms, level, attempt, text"
#: ids for a batch's lines, in order. Parameter: how many
LOG_IDS = "SELECT nextval(pg_get_serial_sequence('log_lines', 'id')) FROM generate_series(1, $1)"
#: the tasks of a batch that still exist and no other process holds (a replica that lost a
#: task writes no more lines into its next run), with their current attempts. Parameters:
#: the ids, this process's id
LOG_TASKS = (
    f"SELECT {TASK_COLUMNS}, (SELECT max(a.number) FROM attempts a WHERE a.task_id = tasks.id)"
    " FROM tasks WHERE id = ANY($1::bigint[]) AND (owner = $2 OR owner IS NULL)"
)
#: a batch's lines. Parameters: ids, task ids, times, levels, attempts, texts
INSERT_LOGS = (
    "INSERT INTO log_lines (id, task_id, time_ms, level, attempt, text)"
    " SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::int[], $5::int[],"
    " $6::text[])"
)
#: each task's count grows by its batch's. Parameters: the ids, the counts, the lines cut
#: from the batches before they were written
COUNT_LOGS = (
    "INSERT INTO log_counts (task_id, lines, dropped)"
    " SELECT * FROM unnest($1::bigint[], $2::int[], $3::bigint[])"
    " ON CONFLICT (task_id) DO UPDATE SET lines = log_counts.lines + excluded.lines,"
    " dropped = log_counts.dropped + excluded.dropped"
    " RETURNING task_id, lines"
)
#: a task's oldest lines past the bound. Parameters: the id, how many
DROP_OLDEST_LOGS = (
    "DELETE FROM log_lines WHERE id IN"
    " (SELECT id FROM log_lines WHERE task_id = $1 ORDER BY id LIMIT $2)"
)
SET_LOG_COUNT = (
    "UPDATE log_counts SET lines = lines - $2, dropped = dropped + $2 WHERE task_id = $1"
)
SELECT_LOGS = (
    f"SELECT {LOG_COLUMNS} FROM log_lines WHERE task_id = $1 AND id > $2 AND level >= $3"
    " ORDER BY id LIMIT $4"
)
LOG_STATE = (
    "SELECT dropped, (SELECT min(id) FROM log_lines WHERE task_id = $1)"
    " FROM log_counts WHERE task_id = $1"
)

# --- schedules (the twins of queries.py's) ---

SCHEDULE_COLUMNS = (
    "graphspace, graph, name, definition, paused, next_fire_ms, anchor_ms, source,"
    " create_ms, update_ms, last_fire_ms, last_task_id"
)
SELECT_SCHEDULES = f"SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY graphspace, graph, name"
SELECT_GRAPH_SCHEDULES = (
    f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE graphspace = $1 AND graph = $2 ORDER BY name"
)
SELECT_SCHEDULE = (
    f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE graphspace = $1 AND graph = $2 AND name = $3"
)
INSERT_SCHEDULE = (
    "INSERT INTO schedules (graphspace, graph, name, definition, paused, next_fire_ms,"
    " anchor_ms, source, create_ms, update_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)"
    f" ON CONFLICT (graphspace, graph, name) DO NOTHING RETURNING {SCHEDULE_COLUMNS}"
)
REPLACE_SCHEDULE = (
    "UPDATE schedules SET definition = $4,"
    " next_fire_ms = CASE WHEN paused THEN NULL ELSE $5::bigint END, anchor_ms = $6, source = $7,"
    " update_ms = $8, lease_owner = NULL, lease_until_ms = 0"
    f" WHERE graphspace = $1 AND graph = $2 AND name = $3 RETURNING {SCHEDULE_COLUMNS}"
)
PAUSE_SCHEDULE = (
    "UPDATE schedules SET paused = $4, next_fire_ms = $5, update_ms = $6, lease_owner = NULL,"
    " lease_until_ms = 0 WHERE graphspace = $1 AND graph = $2 AND name = $3"
    f" RETURNING {SCHEDULE_COLUMNS}"
)
DELETE_SCHEDULE = (
    "DELETE FROM schedules WHERE graphspace = $1 AND graph = $2 AND name = $3"
    f" RETURNING {SCHEDULE_COLUMNS}"
)
#: the due schedules no other replica's firing holds: a replica's claim skips the rows
#: another is claiming right now (SKIP LOCKED), so two never wait on each other
#: the leases of firings whose process is not among the live replicas (a replica's
#: firings hold them under its id): let go, so a firing that died is taken up at once, not
#: when its lease runs out; a hold with no owner (a firing to be tried again) stays
RELEASE_DEAD_SCHEDULE_LEASES = (
    "UPDATE schedules s SET lease_owner = NULL, lease_until_ms = 0"
    " WHERE lease_owner IS NOT NULL AND lease_until_ms > 0"
    " AND NOT EXISTS (SELECT 1 FROM replicas r WHERE r.id::text = s.lease_owner)"
)
CLAIM_SCHEDULES = (
    "UPDATE schedules s SET lease_owner = $1, lease_until_ms = $2 FROM"
    " (SELECT graphspace, graph, name FROM schedules"
    "  WHERE next_fire_ms <= $3 AND lease_until_ms <= $3 ORDER BY next_fire_ms LIMIT $4"
    "  FOR UPDATE SKIP LOCKED) due"
    " WHERE s.graphspace = due.graphspace AND s.graph = due.graph AND s.name = due.name"
    " RETURNING " + ", ".join(f"s.{column.strip()}" for column in SCHEDULE_COLUMNS.split(","))
)
ADVANCE_SCHEDULE = (
    "UPDATE schedules SET next_fire_ms = $4, last_fire_ms = coalesce($5, last_fire_ms),"
    " last_task_id = coalesce($6, last_task_id), update_ms = $7, lease_owner = NULL,"
    " lease_until_ms = $8 WHERE graphspace = $1 AND graph = $2 AND name = $3"
    " AND lease_owner = $9 AND NOT paused"
)
NEXT_SCHEDULE_DUE = (
    "SELECT min(greatest(next_fire_ms, lease_until_ms)) FROM schedules"
    " WHERE next_fire_ms IS NOT NULL"
)


# --- webhooks (schema 5): the outbox, as SQLite's; a claim skips the rows another
# replica's claim has locked ---

INSERT_CALLBACKS = (
    "INSERT INTO callbacks (task_id, url) SELECT * FROM unnest($1::bigint[], $2::text[])"
)
CALLBACKS_OF = "SELECT task_id, url FROM callbacks WHERE task_id = ANY($1::bigint[])"
#: APPEND_EVENTS and the new pending deliveries (due at once) in one statement: a
#: data-modifying WITH runs whether or not it is read, so a transaction that ends tasks
#: with a hook pays no round trip more. Parameters: APPEND_EVENTS', then the deliveries'
#: uids, task ids, hooks, urls, statuses and bodies
APPEND_EVENTS_AND_DELIVERIES = (
    "WITH outbox AS (INSERT INTO deliveries"
    " (uid, task_id, hook, url, status, body, state, create_ms, next_ms)"
    " SELECT r.u, r.t, r.h, r.l, r.s, r.b, 'pending', $8, $8 FROM unnest($9::text[],"
    " $10::bigint[], $11::text[], $12::text[], $13::text[], $14::bytea[])"
    " AS r(u, t, h, l, s, b))"
    " SELECT sidetask_append_events($1, $2, $3, $4, $5, $6, $7, $8)"
)
DELIVERY_COLUMNS = "id, uid, task_id, hook, url, status, body, attempts, create_ms"
#: as SQLite's; FOR UPDATE SKIP LOCKED: two replicas claiming at once take different rows.
#: Parameters: the lease's end, its token, now, how many
CLAIM_DELIVERIES = (
    "UPDATE deliveries SET next_ms = $1, lease = $2 WHERE id IN"
    " (SELECT id FROM deliveries WHERE state = 'pending' AND next_ms <= $3"
    "  ORDER BY next_ms LIMIT $4 FOR UPDATE SKIP LOCKED)"
    f" RETURNING {DELIVERY_COLUMNS}"
)
RECORD_DELIVERY = (
    "UPDATE deliveries SET state = $1, next_ms = $2, attempts = attempts + 1, lease = NULL"
    " WHERE id = $3 AND lease = $4 AND state = 'pending' RETURNING attempts"
)
INSERT_DELIVERY_ANSWER = (
    "INSERT INTO delivery_answers (delivery_id, number, time_ms, code, error, duration_ms)"
    " VALUES ($1, $2, $3, $4, $5, $6)"
)
SELECT_DELIVERIES = (
    "SELECT id, uid, task_id, hook, url, status, state, attempts, create_ms, next_ms"
    " FROM deliveries WHERE task_id = $1 ORDER BY id"
)
SELECT_DELIVERY_ANSWERS = (
    "SELECT a.delivery_id, a.time_ms, a.code, a.error, a.duration_ms FROM delivery_answers a"
    " JOIN deliveries d ON d.id = a.delivery_id WHERE d.task_id = $1"
    " ORDER BY a.delivery_id, a.number"
)
NEXT_DELIVERY = "SELECT min(next_ms) FROM deliveries WHERE state = 'pending'"


# --- dependencies (README, "Dependencies"), as SQLite's ---

#: the graph and status of the tasks a submission names ($1), locked in id order: a
#: dependency that ends meanwhile ends before or after this insert, never unseen by both
#: (its end reads the edges this one writes; this one reads the status its end wrote)
LOCK_DEPENDENCIES = (
    "SELECT id, graphspace, graph, status FROM tasks WHERE id = ANY($1::bigint[])"
    " ORDER BY id FOR UPDATE"
)
SET_DEPENDENCIES = (
    f"UPDATE tasks SET dependencies = $1, waiting_on = $2 WHERE id = $3 RETURNING {TASK_COLUMNS}"
)
INSERT_DEPENDENCIES = (
    "INSERT INTO dependencies (task_id, depends_on) SELECT $1, unnest($2::bigint[])"
    " ON CONFLICT DO NOTHING"
)
COUNT_DEPENDANTS = "UPDATE tasks SET dependants = dependants + 1 WHERE id = ANY($1::bigint[])"
_DEPENDANTS_OF = "id IN (SELECT task_id FROM dependencies WHERE depends_on = $1)"
RELEASE_DEPENDANTS = (
    f"UPDATE tasks SET waiting_on = waiting_on - 1 WHERE {_DEPENDANTS_OF} AND waiting_on > 0"
    f" RETURNING {TASK_COLUMNS}"
)
WAITING_DEPENDANTS = (
    f"SELECT {TASK_COLUMNS} FROM tasks WHERE {_DEPENDANTS_OF} AND waiting_on > 0"
    " AND status IN ('new', 'restoring', 'pending') ORDER BY id"
)
ENDED_DEPENDANTS = (
    f"SELECT {TASK_COLUMNS} FROM tasks WHERE {_DEPENDANTS_OF}"
    " AND status IN ('failed', 'cancelled') AND result IN ($2, $3) ORDER BY id"
)
RECOUNT_WAITING = (
    "UPDATE tasks SET waiting_on = (SELECT count(*) FROM dependencies d JOIN tasks t"
    " ON t.id = d.depends_on WHERE d.task_id = tasks.id AND t.status <> 'success')"
    f" WHERE id = $1 RETURNING {TASK_COLUMNS}"
)
_RECHECK = (
    "SELECT t.id, t.status, t.waiting_on,"
    " count(d.id) FILTER (WHERE d.status <> 'success'),"
    " coalesce(bool_or(d.status IN ('failed', 'cancelled')), false)"
    " FROM ({}) AS t LEFT JOIN dependencies e ON e.task_id = t.id"
    " LEFT JOIN tasks d ON d.id = e.depends_on GROUP BY t.id, t.status, t.waiting_on"
    " ORDER BY t.id"
)
RECHECK_AFTER = _RECHECK.format(
    "SELECT id, status, waiting_on FROM tasks WHERE waiting_on > 0 AND id > $1 ORDER BY id LIMIT $2"
)
RECHECK_OF = _RECHECK.format(
    "SELECT id, status, waiting_on FROM tasks WHERE waiting_on > 0 AND id = ANY($1::bigint[])"
)
DEPENDENCY_STATUSES = (
    "SELECT d.depends_on, t.status FROM dependencies d LEFT JOIN tasks t ON t.id = d.depends_on"
    " WHERE d.task_id = $1 ORDER BY d.depends_on"
)
