"""The dashboard: its page at /ui, the page's files at /ui/{asset}, and / leading to it.

Everything the page loads ships in service/web/static and is served from here: a sidecar
often has no internet, so no CDN and no external font. The Content-Security-Policy makes
the browser refuse anything else, so a stray external reference fails loudly.
"""

from __future__ import annotations

import functools
from importlib import resources

from aiohttp import web

from ..errors import NotFound

PAGE = "index.html"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
#: the page may load, fetch and stream only from the service itself, and no other page may
#: frame it (a frame under another site's page could be clicked through unseen)
CSP = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    # frame-ancestors' older form, for browsers that do not read it from the policy
    "X-Frame-Options": "DENY",
    # small files: always revalidated, so a new version of the service shows its own page
    "Cache-Control": "no-cache",
}


@functools.cache
def assets() -> dict[str, tuple[bytes, str]]:
    """name -> (content, content type) of every file shipped in static/, read once. Only
    these names are served: a request cannot reach any other file."""
    found: dict[str, tuple[bytes, str]] = {}
    for entry in (resources.files(__package__) / "static").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in CONTENT_TYPES:
            found[entry.name] = (entry.read_bytes(), CONTENT_TYPES[suffix])
    return found


def _file(name: str) -> web.Response:
    try:
        body, content_type = assets()[name]
    except KeyError:
        raise NotFound(f"The dashboard has no file '{name}'") from None
    response = web.Response(body=body, headers=HEADERS)
    response.headers["Content-Type"] = content_type
    return response


async def root(request: web.Request) -> web.Response:
    # relative, so the page is found behind a proxy that serves the service under a prefix
    raise web.HTTPFound("ui")


async def page(request: web.Request) -> web.Response:
    return _file(PAGE)


async def asset(request: web.Request) -> web.Response:
    return _file(request.match_info["asset"])
