"""Job types of the dependency tests, registered through the `jobs` setting."""

from __future__ import annotations

from typing import Any

from service.jobs import JobContext
from tests.sup_jobs import JOBS

#: the helper jobs and these
DEPENDENCY_JOBS = {**JOBS, "results": "tests.dep_jobs:results"}


async def results(ctx: JobContext) -> Any:
    """Returns what its dependencies returned, as {"id": result} (JSON keys are text), and
    its own input's `value` when it has one."""
    options = ctx.input if isinstance(ctx.input, dict) else {}
    return {
        "value": options.get("value"),
        "dependencies": {str(k): v for k, v in ctx.dependency_results.items()},
    }
