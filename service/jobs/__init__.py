"""Job types: what a task of each type runs, and the context a job is given."""

from __future__ import annotations

from .base import (
    JobCancelled,
    JobContext,
    JobFunction,
    JobType,
    PermanentFailure,
    Registry,
    build_registry,
)

__all__ = [
    "JobCancelled",
    "JobContext",
    "JobFunction",
    "JobType",
    "PermanentFailure",
    "Registry",
    "build_registry",
]
