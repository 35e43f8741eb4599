"""The job contract: what a job is given (JobContext) and what it may raise. The job types
the service runs are assembled by `service.jobs.registry`."""

from __future__ import annotations

from .base import JobCancelled, JobContext, JobFunction, JobType, PermanentFailure

__all__ = [
    "JobCancelled",
    "JobContext",
    "JobFunction",
    "JobType",
    "PermanentFailure",
]
