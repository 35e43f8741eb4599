"""Dependencies across a SIGKILL (README, "Dependencies", crash safety), with real
`python -m service serve` processes on both stores (`any_db`): a chain whose head was
running when the process was killed goes on after the restart, and the start's re-check
puts right what a process killed between a submission and its check would leave (a wrong
count, a task not yet ended by its failed dependency)."""

from __future__ import annotations

import signal
from pathlib import Path

from aiohttp import ClientSession

from tests.sup_util import execute, rows, wait_file
from tests.web.test_recovery import Factory, get, post_job, started, wait_task


async def test_a_chain_goes_on_after_a_kill_and_the_start_rechecks_the_waiting(
    server_factory: Factory, http: ClientSession, tmp_path: Path, any_db: Path | str
) -> None:
    db = any_db
    first = await started(server_factory, db)
    began = tmp_path / "began"
    head = await post_job(
        http,
        first,
        "gate_first_run",
        {"path": str(tmp_path / "never"), "started": str(began)},
        max_retries=1,
    )
    middle = await post_job(http, first, "echo", {"m": 1}, dependencies=head)
    tail = await post_job(http, first, "echo", {"t": 1}, dependencies=middle)
    miscounted = await post_job(http, first, "echo", {}, dependencies=head)
    failed = await post_job(http, first, "fail", {"message": "no"})
    await wait_task(http, first, failed, "failed")
    unchecked = await post_job(http, first, "echo", {}, dependencies=failed)
    await wait_task(http, first, unchecked, "failed")
    await wait_task(http, first, head, "running")
    await wait_file(began)
    first.kill()
    assert first.proc.returncode == -signal.SIGKILL
    # what a process killed mid-way could leave: a count that is wrong, and a task its
    # failed dependency has not ended yet (killed between its submission and its check)
    execute(db, "UPDATE tasks SET waiting_on = 2 WHERE id = ?", (miscounted,))
    execute(db, "UPDATE tasks SET status = 'new', result = NULL WHERE id = ?", (unchecked,))
    assert rows(db, "SELECT waiting_on FROM tasks WHERE id = ?", (tail,)) == [(1,)]

    second = await started(server_factory, db)
    ended = await wait_task(http, second, unchecked, "failed")
    assert ended["task_result"] == f"Failed due to dependent task '{failed}' failed"
    assert (await wait_task(http, second, head, "success"))["task_retries"] == 1
    for task_id in (middle, tail, miscounted):
        await wait_task(http, second, task_id, "success")
    done = await get(http, second, tail)
    assert done["task_dependencies"] == [middle]
    assert "task_dependencies_left" not in done
