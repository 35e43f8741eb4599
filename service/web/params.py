"""Parsing of paths, query strings and bodies into values, with a 400 that says what was wrong."""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import math
import re
from typing import Any

import orjson
from aiohttp import web

from .. import jsontext
from ..errors import BadRequest, NotFound
from ..model import GraphRef, Status
from .keys import SETTINGS

DEFAULT_GRAPHSPACE = "DEFAULT"
DEFAULT_LIST_LIMIT = 100
#: the largest number any integer option accepts (SQLite's integers are 64-bit)
MAX_INT = 2**53
#: what a client writes as an integer or a number; Python's int() and float() also take
#: "1_000", " 5", "+5", non-ASCII digits and "infinity", which no client means as one
_INTEGER = re.compile(r"-?[0-9]+", re.ASCII)
#: more digits than this is beyond MAX_INT (and int() refuses texts of thousands of digits)
_MAX_DIGITS = 18
_NUMBER = re.compile(r"-?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?", re.ASCII)
#: a number as a client writes one (the public name of the pattern `number` checks)
NUMBER = _NUMBER


def graph_of(request: web.Request) -> GraphRef:
    """The graph the path names; `/graphs/{graph}/…` is graphspace DEFAULT (SPEC 1)."""
    graph = GraphRef(
        request.match_info.get("graphspace", DEFAULT_GRAPHSPACE), request.match_info["graph"]
    )
    if graph not in request.app[SETTINGS].graph_refs():
        raise NotFound(f"Graph '{graph.graph}' does not exist")
    return graph


def is_integer(text: str) -> bool:
    """Whether `text` is an integer as a client writes one, and within MAX_INT's digits."""
    return bool(_INTEGER.fullmatch(text)) and len(text.lstrip("-")) <= _MAX_DIGITS


def integer(name: str, text: str, *, minimum: int | None = None, maximum: int = MAX_INT) -> int:
    if not _INTEGER.fullmatch(text):
        raise BadRequest(f"The parameter '{name}' must be an integer, but got '{text}'")
    if len(text.lstrip("-")) > _MAX_DIGITS:
        raise BadRequest(f"The parameter '{name}' is out of range, got '{text}'")
    value = int(text)
    if minimum is not None and value < minimum:
        raise BadRequest(f"The parameter '{name}' must be >= {minimum}, but got '{text}'")
    if value > maximum:
        raise BadRequest(f"The parameter '{name}' must be <= {maximum}, but got '{text}'")
    return value


def number(
    name: str, text: str, *, minimum: float = 0.0, maximum: float = 10**9, exclusive: bool = False
) -> float:
    if not _NUMBER.fullmatch(text):
        raise BadRequest(f"The parameter '{name}' must be a number, but got '{text}'")
    value = float(text)
    if not math.isfinite(value) or value > maximum:
        raise BadRequest(
            f"The parameter '{name}' must be a finite number <= {maximum:g}, but got '{text}'"
        )
    if value < minimum or (exclusive and value == minimum):
        relation = ">" if exclusive else ">="
        raise BadRequest(f"The parameter '{name}' must be {relation} {minimum:g}, but got '{text}'")
    return value


def boolean(name: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"true", "1", "yes"}:
        return True
    if lowered in {"false", "0", "no", ""}:
        return False
    raise BadRequest(f"The parameter '{name}' must be true or false, but got '{text}'")


def status(text: str) -> Status:
    try:
        return Status.parse(text)
    except ValueError:
        names = ", ".join(s.name for s in Status)
        raise BadRequest(f"Invalid status '{text}', valid statuses are: {names}") from None


def statuses(text: str) -> Status | frozenset[Status]:
    """A list's `status`: one status, or several separated by commas (`new,queued`): the
    tasks in any of them."""
    if "," not in text:
        return status(text)
    return frozenset(status(part.strip()) for part in text.split(","))


def time_ms(name: str, text: str) -> int:
    """A time of a list's range: epoch milliseconds (as task_create and task_update are
    written), or an ISO-8601 time (`2026-12-01T10:00:00Z`, `2026-12-01T11:00+01:00`,
    `2026-12-01`); one without an offset is UTC."""
    text = text.strip()
    if _INTEGER.fullmatch(text) and not text.startswith("-"):
        if len(text) <= _MAX_DIGITS and int(text) <= MAX_INT:
            return int(text)
    else:
        try:
            moment = datetime.datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=datetime.UTC)
            ms = math.floor(moment.timestamp() * 1000)
            if 0 <= ms <= MAX_INT:
                return ms
    shown = text if len(text) <= 80 else text[:80] + "…"
    raise BadRequest(
        f"The parameter '{name}' must be a time: epoch milliseconds or ISO-8601 "
        f"(e.g. 2026-12-01T10:00:00Z) from 1970 on, but got '{shown}'"
    )


#: `order` of a list: ascending ids (oldest first, HugeGraph's) or descending (newest first)
ORDERS = ("asc", "desc")


def task_type(texts: list[str], registered: list[str]) -> str | None:
    """`type`: one registered job type, or None when not given."""
    if not texts:
        return None
    if len(texts) > 1:
        raise BadRequest(f"The parameter 'type' takes one job type, but got {len(texts)}")
    text = texts[0]
    if text not in registered:
        shown = text if len(text) <= 80 else text[:80] + "…"
        raise BadRequest(f"Invalid type '{shown}', valid types are: {', '.join(registered)}")
    return text


def encode_page(last_id: int, descending: bool = False) -> str:
    """The token of the page after the one that ended with `last_id`, in its order."""
    key = "before" if descending else "after"
    return base64.urlsafe_b64encode(orjson.dumps({key: last_id})).decode().rstrip("=")


def decode_page(token: str, descending: bool = False) -> int:
    """The id a page starts after (descending: below); 0 for an empty token, the first page.
    A token goes on in the order it was made in: with the other order it is a 400."""
    if token == "":
        return 0
    key, other = ("before", "after") if descending else ("after", "before")
    try:
        padded = token + "=" * (-len(token) % 4)
        value = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
        if isinstance(value, dict) and other in value and key not in value:
            made_in = "asc" if descending else "desc"
            raise BadRequest(
                f"The page token '{token}' was made for order={made_in}: "
                f"give the same order to go on, or an empty page to start over"
            )
        after = value[key]
        # below 0 descending would be the first page again: no token holds it
        lowest = 1 if descending else 0
        if isinstance(after, bool) or not isinstance(after, int) or not lowest <= after <= MAX_INT:
            raise ValueError
        return int(after)
    except (ValueError, TypeError, KeyError, binascii.Error, orjson.JSONDecodeError):
        raise BadRequest(f"Invalid page token '{token}'") from None


async def json_body(request: web.Request, *, empty: Any = ...) -> Any:
    """The body decoded as JSON; an empty body gives `empty`, or a 400 when none is allowed."""
    raw = await request.read()
    if not raw.strip():
        if empty is ...:
            raise BadRequest("The request body can't be empty")
        return empty
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if exc.msg == "depth limit exceeded":  # beyond orjson's reader (1024 levels)
            raise BadRequest(jsontext.too_deep("The request body")) from None
        raise BadRequest(f"The request body is not valid JSON: {exc}") from None
    if _LONG_DIGITS.search(raw):
        _check_integers(raw)
    return value


#: a run of digits as long as the shortest integer beyond 64 bits
_LONG_DIGITS = re.compile(rb"[0-9]{19}")


def _integer_within_64_bits(text: str) -> int:
    value = int(text)
    if not -(2**63) <= value < 2**63:
        shown = text if len(text) <= 40 else text[:40] + "…"
        raise BadRequest(
            f"The request body has the integer {shown}, beyond 64 bits: it can't be stored exactly"
        )
    return value


def _check_integers(raw: bytes) -> None:
    """orjson reads an integer beyond 64 bits as a float, silently changing it; such a body
    is refused instead. Only a body with a long run of digits (in a number or in a string)
    is read a second time, by the standard library, which sees every integer as written."""
    try:
        json.loads(raw, parse_int=_integer_within_64_bits)
    except RecursionError:
        raise BadRequest(jsontext.too_deep("The request body")) from None
