"""The HTTP layer: the only package that imports aiohttp.web."""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
