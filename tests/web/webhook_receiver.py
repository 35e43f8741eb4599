"""A webhook receiver for the tests: a real aiohttp server on loopback that answers each
request as its plan says (a status, a pause before the answer, a hold until released) and
keeps what it was sent."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Hit:
    headers: dict[str, str]
    body: bytes
    path: str


@dataclass
class Receiver:
    """`plan`: what each request in turn gets, then `default`: a status (int), a pause in
    seconds before a 200 (float), "hold" (no answer until `release` is set), or a
    (status, headers) pair."""

    plan: list[Any] = field(default_factory=list)
    default: Any = 200
    hits: list[Hit] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    runner: web.AppRunner | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.hits.append(Hit(dict(request.headers), body, request.path))
        self.arrived.set()
        action = self.plan.pop(0) if self.plan else self.default
        headers: dict[str, str] = {}
        if isinstance(action, tuple):
            action, headers = action
        if action == "hold":
            await self.release.wait()
            action = 200
        elif isinstance(action, float):
            await asyncio.sleep(action)
            action = 200
        return web.Response(status=int(action), headers=headers)

    async def start(self, port: int = 0) -> Receiver:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        self.port = int(self.runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        self.release.set()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def delivery_ids(self) -> list[str]:
        return [hit.headers["Sidetask-Delivery"] for hit in self.hits]
