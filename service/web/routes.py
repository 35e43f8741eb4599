"""The route table: every graph-scoped route under both prefixes of SPEC 1."""

from __future__ import annotations

from aiohttp import web

from . import (
    docs,
    job_types,
    jobs,
    metrics,
    overview,
    schedules,
    service_routes,
    sse,
    tasks,
    ui,
    worker_routes,
)

#: HugeGraph 1.7 and later, and up to 1.5 (graphspace DEFAULT)
GRAPH_PREFIXES = ("/graphspaces/{graphspace}/graphs/{graph}", "/graphs/{graph}")

#: a task; "counts" and "bulk" are not, so DELETE or PUT …/tasks/counts is a 405 naming
#: GET, and GET, PUT or DELETE …/tasks/bulk one naming POST
TASK = "/tasks/{id:(?!(counts|bulk)$)[^{}/]+}"

GRAPH_ROUTES = (
    ("GET", "/tasks", tasks.list_tasks),
    # before /tasks/{id}, which would read "counts" as a task id
    ("GET", "/tasks/counts", overview.task_counts),
    ("POST", "/tasks/bulk", tasks.bulk_tasks),
    ("GET", TASK, tasks.get_task),
    ("DELETE", TASK, tasks.delete_task),
    ("PUT", TASK, tasks.update_task),
    ("POST", "/jobs/gremlin", jobs.create_gremlin_job),
    ("POST", "/jobs/{type}", jobs.create_job),
    ("GET", "/tasks/{id}/events", sse.task_events),
    ("GET", "/tasks/{id}/attempts", tasks.task_attempts),
    ("GET", "/tasks/{id}/logs", tasks.task_logs),
    ("GET", "/tasks/{id}/deliveries", tasks.task_deliveries),
    ("GET", "/events", sse.graph_events),
    ("GET", "/schedules", schedules.list_schedules),
    ("POST", "/schedules", schedules.create_schedule),
    ("GET", "/schedules/{name}", schedules.get_schedule),
    ("PUT", "/schedules/{name}", schedules.update_schedule),
    ("DELETE", "/schedules/{name}", schedules.delete_schedule),
    ("PUT", "/tasks/{id}/progress", worker_routes.report_progress),
    ("POST", "/tasks/{id}/complete", worker_routes.complete),
    ("POST", "/tasks/{id}/fail", worker_routes.fail),
)

SERVICE_ROUTES = (
    ("GET", "/versions", service_routes.versions),
    ("GET", "/health", service_routes.health),
    ("GET", "/ready", service_routes.ready),
    ("GET", "/openapi.json", service_routes.openapi),
    ("GET", "/metrics", metrics.metrics),
    ("GET", "/events", sse.service_events),
    ("POST", "/workers/{worker}/claim", worker_routes.claim),
    ("GET", "/graphspaces", overview.graphspaces),
    ("GET", "/graphspaces/{graphspace}/graphs", overview.graphspace_graphs),
    ("GET", "/graphs", overview.graphs),
    ("GET", "/types", overview.types),
    ("PUT", "/types/{type}", job_types.update_type),
    ("GET", "/actions", overview.actions),
    # the dashboard
    ("GET", "/", ui.root),
    ("GET", "/ui", ui.page),
    ("GET", "/ui/{asset}", ui.asset),
    # the API's documentation page (Swagger UI on /openapi.json)
    ("GET", "/docs", docs.page),
    ("GET", "/docs/{asset}", docs.asset),
)


def add_routes(app: web.Application) -> None:
    for prefix in GRAPH_PREFIXES:
        for method, path, handler in GRAPH_ROUTES:
            app.router.add_route(method, prefix + path, handler)
    for method, path, handler in SERVICE_ROUTES:
        app.router.add_route(method, path, handler)
