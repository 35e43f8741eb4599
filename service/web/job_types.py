"""Pausing or resuming a job type as a whole (README, "Pausing a job type"); GET /types,
which lists the paused ones, is in overview.py."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import declared
from .keys import LEASE_HUB, SUPERVISOR
from .responses import json_response


def type_body(type_name: str, since: int | None) -> dict[str, Any]:
    return {"type": type_name, "paused": since is not None, "paused_since": since}


async def update_type(request: web.Request) -> web.Response:
    """PUT /types/{type}?action=pause|resume: nothing new of the type starts (its running
    jobs finish) until it is resumed."""
    type_name = request.match_info["type"]
    action = declared.TYPE_ACTION.get(request)
    supervisor = request.app[SUPERVISOR]
    if action == "pause":
        since: int | None = await supervisor.pause_type(type_name)
    else:
        await supervisor.resume_type(type_name)
        request.app[LEASE_HUB].wake()  # external workers' claims waiting here look again
        since = None
    return json_response(type_body(type_name, since))
