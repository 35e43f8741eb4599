"""The API's documentation page at /docs: Swagger UI, from the swagger-ui-py package on
PyPI (no CDN: a sidecar often has no internet), rendering /openapi.json.

Only the files the page loads are served, read once: Swagger UI's bundle and stylesheet
from the installed package (located without importing it: its Python side is for other
frameworks), and the page and its start script from docs_static/. The page gets the
dashboard's Content-Security-Policy: everything from the service itself, nothing else.
"""

from __future__ import annotations

import functools
import importlib.util
from importlib import resources
from pathlib import Path

from aiohttp import web

from ..errors import NotFound
from .ui import CONTENT_TYPES, HEADERS

#: the files of Swagger UI the page loads, by the name it loads them under
SWAGGER_FILES = ("swagger-ui-bundle.js", "swagger-ui.css")
#: our own: the start script (the page itself is served at /docs)
OWN_FILES = ("init.js",)
#: every path of the page, open like /openapi.json (README, "Access and limits")
PATHS = frozenset({"/docs", *(f"/docs/{name}" for name in (*SWAGGER_FILES, *OWN_FILES))})


def _swagger_static() -> Path | None:
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "static"


@functools.cache
def files() -> dict[str, tuple[bytes, str]]:
    """name -> (content, content type) of the page and every file it loads."""
    found: dict[str, tuple[bytes, str]] = {}
    own = resources.files(__package__) / "docs_static"
    for name in ("index.html", *OWN_FILES):
        found[name] = ((own / name).read_bytes(), CONTENT_TYPES["." + name.rpartition(".")[2]])
    static = _swagger_static()
    for name in SWAGGER_FILES:
        if static is not None and (static / name).is_file():
            found[name] = (
                (static / name).read_bytes(),
                CONTENT_TYPES["." + name.rpartition(".")[2]],
            )
    return found


def _file(name: str) -> web.Response:
    try:
        body, content_type = files()[name]
    except KeyError:
        if name in SWAGGER_FILES:
            raise NotFound(
                f"The documentation page needs Swagger UI's '{name}': pip install swagger-ui-py"
            ) from None
        raise NotFound(f"The documentation page has no file '{name}'") from None
    response = web.Response(body=body, headers=HEADERS)
    response.headers["Content-Type"] = content_type
    return response


async def page(request: web.Request) -> web.Response:
    return _file("index.html")


async def asset(request: web.Request) -> web.Response:
    return _file(request.match_info["asset"])
