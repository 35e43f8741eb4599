"""`gremlin`: HugeGraph's gremlin job: post the script to a Gremlin HTTP endpoint, keep `result.data`."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from ..model import GraphRef
from .base import JobContext, PermanentFailure

#: the graphspace of HugeGraph's `/graphs/{graph}` routes
DEFAULT_GRAPHSPACE = "DEFAULT"


class GremlinError(RuntimeError):
    """The Gremlin endpoint answered with an error, or not at all (retries apply)."""


def gremlin_graph_name(graph: GraphRef) -> str:
    """The name a HugeGraph server knows a graph by in Gremlin: `{graphspace}-{graph}` for
    a graphspace of its own (HugeGraph 1.7), the plain name in DEFAULT, which servers before
    1.7 (no graphspaces) also accept."""
    if graph.graphspace == DEFAULT_GRAPHSPACE:
        return graph.graph
    return f"{graph.graphspace}-{graph.graph}"


async def run(ctx: JobContext) -> Any:
    url = ctx.settings.gremlin_url
    if not url:
        raise PermanentFailure(
            "No Gremlin endpoint is configured (setting gremlin_url / SIDETASK_GREMLIN_URL); "
            "the gremlin job has nowhere to send its script"
        )
    job = ctx.input if isinstance(ctx.input, dict) else {}
    # HugeGraph's POST /gremlin request: the graph and its traversal source as aliases.
    name = gremlin_graph_name(ctx.graph)
    request = {
        "gremlin": job.get("gremlin", ""),
        "bindings": job.get("bindings") or {},
        "language": job.get("language") or "gremlin-groovy",
        "aliases": {"graph": name, "g": f"__g_{name}"},
    }
    seconds = ctx.settings.gremlin_timeout
    timeout = aiohttp.ClientTimeout(total=seconds)
    # A cancel interrupts the await below, which aborts the request and closes its connection.
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(
                url, data=orjson.dumps(request), headers={"Content-Type": "application/json"}
            ) as response,
        ):
            body = await response.read()
    except TimeoutError:
        # aiohttp's own timeout (a task timeout reaches this job as a cancel, not here)
        raise GremlinError(
            f"Gremlin endpoint {url} did not answer within {seconds:g} s (setting gremlin_timeout)"
        ) from None
    except aiohttp.ClientError as exc:
        raise GremlinError(f"Gremlin endpoint {url} could not be reached: {exc}") from None
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise GremlinError(
            f"Gremlin endpoint {url} answered {response.status} with a body that is not JSON"
        ) from None
    status = answer.get("status") if isinstance(answer, dict) else None
    code = status.get("code", response.status) if isinstance(status, dict) else response.status
    if response.status != 200 or code not in (200, 204, 206):
        message = status.get("message") if isinstance(status, dict) else None
        message = message or (answer.get("message") if isinstance(answer, dict) else None)
        raise GremlinError(
            f"Gremlin endpoint {url} answered {response.status}: {message or body[:500]!r}"
        )
    result = answer.get("result") if isinstance(answer, dict) else None
    return result.get("data") if isinstance(result, dict) else None
