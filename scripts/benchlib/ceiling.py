"""The ceiling: the least an aiohttp server can do for the submit row's requests.

It answers POST …/jobs/{type} with 201 and a small orjson body ({"task_id": N}) after
reading the request body, and GET /ready with 200; nothing is stored. Run on its own as
`python -m benchlib.ceiling --port P`, on uvloop when installed (as the service is), so the
ratio of the service to it is the cost of everything the service does beyond HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools

import orjson
from aiohttp import web

CONTENT_TYPE = "application/json;charset=UTF-8"


def create_app() -> web.Application:
    counter = itertools.count(1)

    async def submit(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(
            status=201,
            body=orjson.dumps({"task_id": next(counter)}),
            headers={"Content-Type": CONTENT_TYPE},
        )

    async def ready(request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ready"}', headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_post("/graphs/{graph}/jobs/{type}", submit)
    app.router.add_get("/ready", ready)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(create_app(), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
