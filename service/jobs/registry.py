"""The job registry: every job type the service runs, by name — the built-ins, the
functions and process jobs the configuration declares, its command jobs and the types
external workers serve."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

from .. import leases
from ..config import ConfigError, JobSpec, Settings
from . import command, process
from .base import JobType, load_function

#: the job types every service has, as `module:callable`
BUILTINS = {
    "sleep": "service.jobs.sleep:run",
    "echo": "service.jobs.echo:run",
    "fail": "service.jobs.fail:run",
    "gremlin": "service.jobs.gremlin:run",
}


class Registry:
    """Job types by name: the built-ins and those the configuration declares."""

    def __init__(self, types: Mapping[str, JobType]) -> None:
        self._types = dict(types)

    def get(self, name: str) -> JobType | None:
        return self._types.get(name)

    def names(self) -> list[str]:
        return sorted(self._types)

    def __contains__(self, name: object) -> bool:
        return name in self._types


def add_import_paths(paths: Sequence[str]) -> None:
    """Puts `paths` at the front of sys.path, in their order, each once: the job modules
    of a project are found there before anything of the same name elsewhere."""
    for path in reversed(paths):
        if path in sys.path:
            sys.path.remove(path)
        sys.path.insert(0, path)


def build_registry(settings: Settings) -> Registry:
    """Every job type of `settings`; a ConfigError that names the setting when one cannot
    be used (a function that cannot be imported, a name given twice)."""
    add_import_paths(settings.import_paths)
    types: dict[str, JobType] = {}
    for name, spec in {**BUILTINS, **settings.jobs}.items():
        job = spec if isinstance(spec, JobSpec) else JobSpec(spec)
        where = f"jobs.{name}" if isinstance(spec, str) else f"jobs.{name}.call"
        try:
            if job.run_in == "process":
                types[name] = process.job_type(name, job.call)
            else:
                path, function = load_function(job.call)
                types[name] = JobType(name, path, function)
        except ValueError as exc:  # a ConfigError: the service cannot start with this setting
            raise ConfigError(f"{where}: {exc}") from None
    for name, declared in settings.commands.items():
        if name in types:
            raise ConfigError(f"commands.{name}: a job type '{name}' already exists")
        types[name] = command.job_type(name, declared)
    for name in settings.external_types:
        if name in types:
            raise ConfigError(f"external_types: a job type '{name}' already exists")
        types[name] = JobType(name, leases.CALLABLE_PATH, leases.external)
    return Registry(types)
