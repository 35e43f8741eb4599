"""The sidetask command's exit codes, and the error of arguments a command cannot use."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CANCELLED = 2
EXIT_USAGE = 2
EXIT_ERROR = 3
EXIT_UNREACHABLE = 4
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A client command's arguments cannot be used (the parser prints it and exits 2)."""
