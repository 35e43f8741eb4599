"""Versioned SQLite schema: migration N brings `PRAGMA user_version` from N-1 to N."""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: tasks and their event log
    """
    CREATE TABLE tasks (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, even after a delete
        graphspace      TEXT    NOT NULL,
        graph           TEXT    NOT NULL,
        name            TEXT    NOT NULL,
        type            TEXT    NOT NULL,
        callable        TEXT    NOT NULL,
        status          TEXT    NOT NULL,
        progress        INTEGER NOT NULL DEFAULT 0,
        create_ms       INTEGER NOT NULL,
        update_ms       INTEGER NOT NULL,
        result          TEXT,
        input           TEXT,
        retries         INTEGER NOT NULL DEFAULT 0,
        max_retries     INTEGER NOT NULL DEFAULT 0,
        priority        INTEGER NOT NULL DEFAULT 0,
        timeout         REAL,
        run_after_ms    INTEGER NOT NULL DEFAULT 0,
        server          TEXT,
        description     TEXT,
        idempotency_key TEXT
    );
    -- GET …/tasks: a graph's tasks in id order (also serves ids= and page=)
    CREATE INDEX tasks_by_graph ON tasks (graphspace, graph, id);
    -- GET …/tasks?status=: a graph's tasks of one status in id order
    CREATE INDEX tasks_by_graph_status ON tasks (graphspace, graph, status, id);
    -- the scheduler's claim: waiting tasks, highest priority first, then oldest
    CREATE INDEX tasks_waiting ON tasks (priority DESC, id)
        WHERE status IN ('new', 'restoring');
    -- recovery at start, counts by status, and the retention purge by age
    CREATE INDEX tasks_by_status_update ON tasks (status, update_ms);
    -- Idempotency-Key: one task per key and graph
    CREATE UNIQUE INDEX tasks_idempotency ON tasks (graphspace, graph, idempotency_key)
        WHERE idempotency_key IS NOT NULL;

    CREATE TABLE events (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,  -- the SSE id: increasing, never reused
        task_id     INTEGER NOT NULL,
        graphspace  TEXT    NOT NULL,
        graph       TEXT    NOT NULL,
        kind        TEXT    NOT NULL,
        task_type   TEXT    NOT NULL,
        status      TEXT,
        data        BLOB    NOT NULL,
        create_ms   INTEGER NOT NULL
    );
    -- a task's stream replayed after Last-Event-ID
    CREATE INDEX events_by_task ON events (task_id, id);
    """,
    # 2: /metrics counts tasks by status and type from an index instead of the table
    """
    CREATE INDEX tasks_by_status_type ON tasks (status, type);
    """,
    # 3: external workers' leases, and the process group of a running command job
    """
    ALTER TABLE tasks ADD COLUMN lease TEXT;                -- the token of a worker's claim
    ALTER TABLE tasks ADD COLUMN lease_expires_ms INTEGER;  -- NULL: no live lease
    ALTER TABLE tasks ADD COLUMN process_group INTEGER;     -- a command job's process group id
    ALTER TABLE tasks ADD COLUMN process_token TEXT;        -- tells that group from a later one
    -- the lease sweep: live leases by expiry
    CREATE INDEX tasks_leases ON tasks (lease_expires_ms) WHERE lease_expires_ms IS NOT NULL;
    -- recovery at start: the process groups a crashed run may have left
    CREATE INDEX tasks_process_groups ON tasks (id) WHERE process_group IS NOT NULL;
    """,
    # 4: the purge's index holds completed tasks only. Indexed by (status, update_ms), every
    # status step and every progress write of every task moved an entry; recovery reads
    # tasks by status through tasks_by_status_type.
    """
    DROP INDEX tasks_by_status_update;
    CREATE INDEX tasks_completed_by_update ON tasks (update_ms)
        WHERE status IN ('cancelled', 'failed', 'success');
    """,
    # 5: GET …/tasks?type=: a graph's tasks of one type in id order (either way). A task's
    # type never changes, so no write but its insert and delete moves an entry.
    """
    CREATE INDEX tasks_by_graph_type ON tasks (graphspace, graph, type, id);
    """,
    # 6: the progress value that means done, as a job declares it (task_progress_total);
    # NULL: not known
    """
    ALTER TABLE tasks ADD COLUMN progress_total INTEGER;
    """,
    # 7: what an Idempotency-Key stood for: the SHA-256 of the first request's type, input
    # and options (NewTask.fingerprint). A key used again with another request is a 422;
    # rows of before this migration have none, and a key of theirs answers as a replay.
    """
    ALTER TABLE tasks ADD COLUMN idempotency_fingerprint TEXT;
    """,
    # 8: a claim's cost must not grow with the tasks waiting for a later time. The claim
    # index held every waiting task, so each claim walked past all the delayed ones (and
    # backed-off retries) to find the due ones: 100,000 delayed made every step six times
    # the writer's work. Now a due task has run_after_ms 0 and only those are in the claim
    # index; a task with a due time waits in an index by that time, and the claim first
    # moves those whose time has come (a range of that index) into the claim index.
    """
    DROP INDEX tasks_waiting;
    CREATE INDEX tasks_waiting ON tasks (priority DESC, id)
        WHERE status IN ('new', 'restoring') AND run_after_ms = 0;
    CREATE INDEX tasks_delayed ON tasks (run_after_ms)
        WHERE status IN ('new', 'restoring') AND run_after_ms > 0;
    """,
    # 9: each run of a task (an attempt): written in the transaction of the status step
    # that starts it and of the one that ends it; the job's last checkpoint is kept in the
    # attempt that stored it. Deleted with the task (delete, purge) by the trigger.
    """
    CREATE TABLE attempts (
        task_id       INTEGER NOT NULL,
        number        INTEGER NOT NULL,  -- 1, 2, …: in the order the runs started
        server        TEXT,              -- the task_server of the run
        replica       TEXT,              -- the process that started it: host:pid
        start_ms      INTEGER NOT NULL,
        end_ms        INTEGER,           -- NULL while it runs
        outcome       TEXT,              -- model.AttemptOutcome; NULL while it runs
        error_type    TEXT,
        error_message TEXT,
        traceback     TEXT,
        checkpoint    TEXT,              -- JSON text: the job's last checkpoint in this run
        PRIMARY KEY (task_id, number)
    ) WITHOUT ROWID;
    CREATE TRIGGER tasks_attempts_deleted AFTER DELETE ON tasks
    BEGIN
        DELETE FROM attempts WHERE task_id = OLD.id;
    END;
    """,
    # 10: a job's log lines (ctx.log, its logging and print, a command's output), written
    # in batches with the progress; `log_counts` keeps each task's count and how many of
    # its oldest lines were dropped past max_log_lines. Deleted with the task.
    """
    CREATE TABLE log_lines (
        id       INTEGER PRIMARY KEY,  -- increasing in the order a task's lines were written
        task_id  INTEGER NOT NULL,
        time_ms  INTEGER NOT NULL,
        level    INTEGER NOT NULL,     -- model.LOG_LEVELS' index
        attempt  INTEGER,              -- the attempt that wrote it
        text     TEXT    NOT NULL
    );
    CREATE INDEX log_lines_by_task ON log_lines (task_id, id);
    CREATE TABLE log_counts (
        task_id  INTEGER PRIMARY KEY,
        lines    INTEGER NOT NULL,     -- lines stored
        dropped  INTEGER NOT NULL      -- the oldest lines dropped past max_log_lines
    );
    CREATE TRIGGER tasks_logs_deleted AFTER DELETE ON tasks
    BEGIN
        DELETE FROM log_lines WHERE task_id = OLD.id;
        DELETE FROM log_counts WHERE task_id = OLD.id;
    END;
    """,
    # 11: the W3C trace context a task was submitted under (task_traceparent,
    # task_tracestate); NULL: none
    """
    ALTER TABLE tasks ADD COLUMN traceparent TEXT;
    ALTER TABLE tasks ADD COLUMN tracestate TEXT;
    """,
    # 12: GET …/tasks?name= (a prefix), created_from/created_to and updated_from/updated_to,
    # and the bulk actions on what they match: an index for each, within a graph, with the
    # id last (a range's tasks are sorted by id from the index alone). A task's name and
    # creation never change; every status step and progress write moves its update entry.
    """
    CREATE INDEX tasks_by_graph_name ON tasks (graphspace, graph, name, id);
    CREATE INDEX tasks_by_graph_create ON tasks (graphspace, graph, create_ms, id);
    CREATE INDEX tasks_by_graph_update ON tasks (graphspace, graph, update_ms, id);
    """,
    # 13: the outbox (README, "Webhooks"). A task's own callback URL; the deliveries a
    # status change writes in its transaction (the body is the task as GET showed it then);
    # each attempt's answer. A pending delivery waits in the due index by `next_ms`; a claim
    # moves `next_ms` past its lease, so a claim whose process died comes due again by
    # itself. Deleted with the task (delete, purge) by the trigger.
    """
    CREATE TABLE callbacks (
        task_id  INTEGER PRIMARY KEY,
        url      TEXT    NOT NULL
    );
    CREATE TABLE deliveries (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        uid        TEXT    NOT NULL,     -- the Sidetask-Delivery header: the same on every try
        task_id    INTEGER NOT NULL,
        hook       TEXT    NOT NULL,     -- a configured hook's name, or 'callback'
        url        TEXT    NOT NULL,
        status     TEXT    NOT NULL,     -- the status the change wrote
        body       BLOB    NOT NULL,
        state      TEXT    NOT NULL,     -- model.DeliveryState
        attempts   INTEGER NOT NULL DEFAULT 0,
        create_ms  INTEGER NOT NULL,
        next_ms    INTEGER,              -- pending: when it may be tried (or its claim ends)
        lease      TEXT                  -- the claim its answer is recorded under
    );
    CREATE INDEX deliveries_due ON deliveries (next_ms) WHERE state = 'pending';
    CREATE INDEX deliveries_by_task ON deliveries (task_id, id);
    CREATE TABLE delivery_answers (
        delivery_id  INTEGER NOT NULL,
        number       INTEGER NOT NULL,
        time_ms      INTEGER NOT NULL,
        code         INTEGER,            -- the HTTP status; NULL: no answer (see error)
        error        TEXT,
        duration_ms  INTEGER NOT NULL,
        PRIMARY KEY (delivery_id, number)
    ) WITHOUT ROWID;
    CREATE TRIGGER tasks_deliveries_deleted AFTER DELETE ON tasks
    BEGIN
        DELETE FROM callbacks WHERE task_id = OLD.id;
        DELETE FROM delivery_answers WHERE delivery_id IN
            (SELECT id FROM deliveries WHERE task_id = OLD.id);
        DELETE FROM deliveries WHERE task_id = OLD.id;
    END;
    """,
    # task dependencies (README, "Dependencies"): each edge (task_id waits for
    # depends_on), by dependency for what a dependency's end reaches and by dependant for
    # the recount; on the row, its ids as JSON (task_dependencies), how many of them have not
    # succeeded yet (waiting_on), and how many tasks named it (dependants: 0, and its end
    # looks for nobody). A task waiting for one is outside the claim index, so the wait costs
    # nothing per waiting task; the edges of a deleted dependant go with it by the trigger.
    """
    ALTER TABLE tasks ADD COLUMN dependencies TEXT;
    ALTER TABLE tasks ADD COLUMN waiting_on INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE tasks ADD COLUMN dependants INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE dependencies (
        task_id     INTEGER NOT NULL,
        depends_on  INTEGER NOT NULL,
        PRIMARY KEY (depends_on, task_id)
    ) WITHOUT ROWID;
    CREATE INDEX dependencies_by_task ON dependencies (task_id, depends_on);
    CREATE TRIGGER tasks_dependencies_deleted AFTER DELETE ON tasks
    BEGIN
        DELETE FROM dependencies WHERE task_id = OLD.id;
    END;
    DROP INDEX tasks_waiting;
    CREATE INDEX tasks_waiting ON tasks (priority DESC, id)
        WHERE status IN ('new', 'restoring') AND run_after_ms = 0 AND waiting_on = 0;
    -- the recovery's re-check: the tasks waiting for a dependency
    CREATE INDEX tasks_waiting_on ON tasks (id) WHERE waiting_on > 0;
    """,
    # 15: schedules (service.schedules): each one's definition (JSON) and next fire time;
    # the firing loop holds the due ones it claimed by a lease (lease_owner, until
    # lease_until_ms). A fire time's task is made with an Idempotency-Key of the schedule
    # and the fire time, in the insert's transaction: one task per fire time.
    """
    CREATE TABLE schedules (
        graphspace      TEXT    NOT NULL,
        graph           TEXT    NOT NULL,
        name            TEXT    NOT NULL,
        definition      TEXT    NOT NULL,           -- schedules.Definition as JSON
        paused          INTEGER NOT NULL DEFAULT 0,
        next_fire_ms    INTEGER,                    -- NULL while paused
        anchor_ms       INTEGER NOT NULL,           -- where an interval's fire times count from
        source          TEXT    NOT NULL,           -- 'config' or 'api'
        create_ms       INTEGER NOT NULL,
        update_ms       INTEGER NOT NULL,
        last_fire_ms    INTEGER,
        last_task_id    INTEGER,
        lease_owner     TEXT,
        lease_until_ms  INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (graphspace, graph, name)
    );
    -- the firing loop: the due schedules, and when it next has one
    CREATE INDEX schedules_due ON schedules (next_fire_ms) WHERE next_fire_ms IS NOT NULL;
    -- a schedule's task: the schedule (task_schedule) and its fire time
    ALTER TABLE tasks ADD COLUMN schedule TEXT;
    ALTER TABLE tasks ADD COLUMN schedule_fire_ms INTEGER;
    """,
    # the job types paused as a whole (PUT /types/{type}?action=pause): no task of one is
    # claimed, by this process or an external worker, until it is resumed
    """
    CREATE TABLE paused_types (
        type      TEXT    PRIMARY KEY,
        since_ms  INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
    # type_rate_limits: the starts of each limited type in its current window (a fixed
    # window: window_ms is its start), counted in the claims' transactions
    """
    CREATE TABLE type_rates (
        type       TEXT    PRIMARY KEY,
        window_ms  INTEGER NOT NULL,
        count      INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)
