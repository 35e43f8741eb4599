"""sidetask: an async task service with a HugeGraph-compatible Task API, SQLite persistence
and live progress over Server-Sent Events. Its typed client is `service.client`, its
worker library `service.worker`; `python -m service` is the sidetask command."""

from __future__ import annotations

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    """`service.__version__`: the installed distribution's version, the one pyproject.toml
    gives. Read when asked, not at import: every module of the service imports this package
    first (a process job's child too), and importlib.metadata takes tens of milliseconds to
    import."""
    if name == "__version__":
        from importlib import metadata

        try:
            return metadata.version("sidetask")
        except metadata.PackageNotFoundError:  # run from a tree that was never installed
            return "0.0.0+unknown"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
