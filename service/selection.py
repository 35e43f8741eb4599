"""Which tasks a list or a bulk action takes beside status and type: a name prefix and
created / updated ranges. Pure data, no I/O; each store turns it into SQL."""

from __future__ import annotations

from dataclasses import dataclass

#: the highest code point: a prefix's range ends before the prefix with its last
#: character raised by one (below this, and past the surrogates, which text never holds)
_MAX_CHAR = 0x10FFFF


@dataclass(frozen=True, slots=True)
class Selection:
    """Tasks whose name starts with `name`, created in [created_from, created_to) and last
    changed in [updated_from, updated_to) (epoch milliseconds; None: no bound)."""

    name: str | None = None
    created_from: int | None = None
    created_to: int | None = None
    updated_from: int | None = None
    updated_to: int | None = None

    @property
    def empty(self) -> bool:
        """Whether it takes every task (no term at all)."""
        return self == EVERY

    @property
    def name_range(self) -> tuple[str, str | None] | None:
        """The prefix as a range of text, [low, high) in code point (byte) order: what an
        index on the name reads. None: no name term; high None: no upper end."""
        if not self.name:
            return None
        return self.name, prefix_end(self.name)

    def terms(self) -> tuple[tuple[bool, ...], list[str | int]]:
        """Which of its six terms it has (name low, name high, created from, created to,
        updated from, updated to: the order each store's SELECTION_TERMS lists them in)
        and their values in that order."""
        name = self.name_range
        values = (
            None if name is None else name[0],
            None if name is None else name[1],
            self.created_from,
            self.created_to,
            self.updated_from,
            self.updated_to,
        )
        return tuple(v is not None for v in values), [v for v in values if v is not None]


#: no term: every task
EVERY = Selection()


def prefix_end(prefix: str) -> str | None:
    """The least text above every text that starts with `prefix` (code point order), or
    None when there is none (the prefix is all U+10FFFF)."""
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < _MAX_CHAR:
            raised = last + 1
            if 0xD800 <= raised <= 0xDFFF:  # surrogates are not text
                raised = 0xE000
            return "".join(chars) + chr(raised)
    return None
