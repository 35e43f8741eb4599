"""What every store does alike with a status change: which fields it may set, which
statuses it may come from, and how a refusal is put to the caller."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import NotFound, SidetaskError, TransitionRefused
from ..model import Task, allowed_sources
from .base import Change

#: fields a status change may set besides status and update_ms
CHANGEABLE_FIELDS = frozenset(
    {"progress", "progress_total", "result", "retries", "run_after_ms", "server", "description"}
)


def changeable(fields: Mapping[str, Any]) -> tuple[str, ...]:
    """The names of `fields`, each one a status change may set (else ValueError)."""
    names = tuple(fields)
    bad = set(names) - CHANGEABLE_FIELDS
    if bad:
        raise ValueError(f"not changeable: {sorted(bad)}")
    return names


def sources_of(change: Change) -> list[str]:
    """The statuses `change` may come from, as stored values: the transition table's,
    narrowed by the change's own `sources` when given."""
    sources = allowed_sources(change.target)
    if change.sources is not None:
        sources = sources & change.sources
    return [s.value for s in sorted(sources)]


def refusal(change: Change, current: Task | None) -> SidetaskError:
    """Why `change` did not apply to the task as it is now (None: there is none)."""
    if current is None:
        return NotFound(f"Can't find task with id '{change.task_id}'")
    return TransitionRefused(
        f"Task '{change.task_id}' in status {current.status.name} can't become {change.target.name}"
    )
