"""Service routes (SPEC 8): versions, health, readiness, the OpenAPI document."""

from __future__ import annotations

from aiohttp import web

import service

from ..errors import ServiceUnavailable
from .keys import REGISTRY, SETTINGS, SUPERVISOR
from .openapi import openapi_document
from .responses import json_response

#: the HugeGraph versions clients read: pyhugegraph picks graphspace paths for core >= 1.7.0
HUGEGRAPH_VERSIONS = {"version": "v1", "core": "1.7.0", "gremlin": "3.5.1", "api": "0.71"}


def sidetask_version() -> str:
    return service.__version__


async def versions(request: web.Request) -> web.Response:
    return json_response({"versions": {**HUGEGRAPH_VERSIONS, "sidetask": sidetask_version()}})


async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    supervisor = request.app.get(SUPERVISOR)
    if supervisor is None or not supervisor.started:
        raise ServiceUnavailable(
            "Not ready: the store is not open or the supervisor is not running"
        )
    if not supervisor.alive:
        raise ServiceUnavailable(
            "Not ready: no heartbeat could be written to the database for "
            f"{request.app[SETTINGS].replica_timeout:g} s; the other processes take this "
            "one's tasks"
        )
    return json_response({"status": "ready"})


async def openapi(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    document = openapi_document(
        sidetask_version(),
        basic=bool(settings.users),
        bearer=bool(settings.tokens),
        metrics_public=settings.metrics_public,
        grants=bool(settings.grants),
        job_types=request.app[REGISTRY].names(),
        external_types=settings.external_types,
    )
    return json_response(document)
