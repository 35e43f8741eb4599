"""Read-only routes the dashboard reads: the declared graphspaces and graphs (as HugeGraph
lists them), the registered job types, the actions each status allows, and a graph's task
counts per status."""

from __future__ import annotations

from aiohttp import web

from ..errors import NotFound
from ..model import Action, GraphRef, Status, actions_of
from . import params
from .auth import reaches
from .keys import REGISTRY, SETTINGS, STORE
from .responses import json_response

#: the order the counters are written in: a task's life (the enum's order), then the status
#: nothing reaches
COUNT_ORDER = (*(s for s in Status if s is not Status.UNKNOWN), Status.UNKNOWN)


def _graphs(request: web.Request) -> list[GraphRef]:
    """The declared graphs the caller may reach (its grants; README, "Access and limits")."""
    return [g for g in request.app[SETTINGS].graph_refs() if reaches(request, g)]


def _graphs_in(request: web.Request, graphspace: str) -> list[str]:
    return [g.graph for g in _graphs(request) if g.graphspace == graphspace]


async def graphspaces(request: web.Request) -> web.Response:
    """HugeGraph 1.7's `GET /graphspaces`: the graphspaces of the declared graphs, and
    DEFAULT, which `/graphs/{graph}/…` always addresses."""
    names = {g.graphspace for g in _graphs(request)}
    names.add(params.DEFAULT_GRAPHSPACE)
    return json_response({"graphspaces": sorted(names)})


async def graphs(request: web.Request) -> web.Response:
    """HugeGraph's `GET /graphs` (up to 1.5): the graphs of graphspace DEFAULT."""
    return json_response({"graphs": _graphs_in(request, params.DEFAULT_GRAPHSPACE)})


async def graphspace_graphs(request: web.Request) -> web.Response:
    """HugeGraph 1.7's `GET /graphspaces/{graphspace}/graphs`."""
    graphspace = request.match_info["graphspace"]
    names = _graphs_in(request, graphspace)
    if not names and graphspace != params.DEFAULT_GRAPHSPACE:
        raise NotFound(f"Graphspace '{graphspace}' does not exist")
    return json_response({"graphs": names})


async def types(request: web.Request) -> web.Response:
    """The registered job types, each a valid `{type}` of `POST {base}/jobs/{type}`, and the
    paused ones with the time each was paused (read from the store: what every replica
    obeys; README, "Pausing a job type")."""
    paused = await request.app[STORE].paused_types()
    settings = request.app[SETTINGS]
    return json_response(
        {
            "types": request.app[REGISTRY].names(),
            "paused": paused,
            # the limits of each type: at once (type_concurrency), starts (type_rate_limits)
            "concurrency": dict(settings.type_concurrency),
            "rate_limits": dict(settings.type_rate_limits),
        }
    )


#: how each action is asked for; {base} is a graph's prefix, {id} the task's id
ACTION_REQUESTS = {
    Action.CANCEL: "PUT {base}/tasks/{id}?action=cancel",
    Action.PAUSE: "PUT {base}/tasks/{id}?action=pause",
    Action.RESUME: "PUT {base}/tasks/{id}?action=resume",
    Action.RETRY: "PUT {base}/tasks/{id}?action=retry",
    Action.DELETE: "DELETE {base}/tasks/{id}",
    Action.FORCE_DELETE: "DELETE {base}/tasks/{id}?force=true",
}


async def actions(request: web.Request) -> web.Response:
    """The actions a task in each status allows (service.model.ACTION_STATUSES, the rules the
    supervisor refuses by), in the counters' order, and the request each one is."""
    return json_response(
        {
            "actions": {s.value: [a.value for a in actions_of(s)] for s in COUNT_ORDER},
            "requests": {a.value: ACTION_REQUESTS[a] for a in Action},
        }
    )


async def task_counts(request: web.Request) -> web.Response:
    """A graph's tasks per status, every status written (zeros too), and their total."""
    graph = params.graph_of(request)
    counts = await request.app[STORE].count_statuses(graph)
    return json_response(
        {"counts": {s.value: counts.get(s, 0) for s in COUNT_ORDER}, "total": sum(counts.values())}
    )
