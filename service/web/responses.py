"""JSON responses written with orjson, in HugeGraph's content type."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

JSON_CONTENT_TYPE = "application/json;charset=UTF-8"


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    response = web.Response(body=orjson.dumps(body), status=status, headers=headers)
    # set after construction: aiohttp's content_type= argument would re-space the charset
    response.headers["Content-Type"] = JSON_CONTENT_TYPE
    return response


def error_body(kind: str, message: str, cause: str = "") -> dict[str, str]:
    """HugeGraph's error body (SPEC 6). A message may quote what the client sent: text that
    was not UTF-8 is shown with replacement characters rather than failing the answer."""
    return {"exception": kind, "message": _printable(message), "cause": _printable(cause)}


def _printable(text: str) -> str:
    return text if text.isascii() else text.encode("utf-8", "replace").decode()


def error_response(
    status: int, kind: str, message: str, cause: str = "", headers: dict[str, str] | None = None
) -> web.Response:
    return json_response(error_body(kind, message, cause), status=status, headers=headers)
