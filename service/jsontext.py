"""JSON text of the values callers and jobs give (an input, a result): one bound on their
nesting, and one message for a value beyond it, wherever it is encoded.

orjson reads JSON nested up to 1024 levels deep but writes values nested at most 254
levels deep, so 254 is the bound: a value is refused where it arrives (a submission's body,
a worker's result, a job's return value, the command line's `--input`), never stored as
something the service could not write back out. Values are embedded in larger answers
(a claim's `input`, a worker's `{"result": …}`) as the text already written, so the
wrapping adds no level.
"""

from __future__ import annotations

from typing import Any

import orjson

#: the deepest nesting of arrays and objects a value may have ([] and [1] are 1 level)
MAX_DEPTH = 254


class TooDeep(ValueError):
    """A value nested deeper than MAX_DEPTH; the message names `what` it was."""

    def __init__(self, what: str) -> None:
        super().__init__(too_deep(what))


def too_deep(what: str) -> str:
    """The one message for a value nested beyond the bound."""
    return f"{what} is nested too deeply; at most {MAX_DEPTH} levels are allowed"


def dumps(value: Any, what: str) -> bytes:
    """`value` as JSON; TooDeep when it is nested beyond MAX_DEPTH (a value orjson cannot
    write for another reason raises its TypeError, as orjson.dumps does)."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        if _deeper_than_bound(value):
            raise TooDeep(what) from None
        raise


def _deeper_than_bound(value: Any) -> bool:
    # Iterative, and it stops past the bound: a value that refers to itself ends here too.
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if level > MAX_DEPTH:
            return True
        stack.extend((child, level + 1) for child in children)
    return False
