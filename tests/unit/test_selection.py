"""The list's selection: a prefix's range of text (pure), and the SQLite store's plans for
each way it reads a selection, EXPLAINed: every one reads an index, and only the way meant
for a small range sorts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from service import clock
from service.model import Status
from service.selection import EVERY, Selection, prefix_end
from service.store import sqlite as sqlite_store
from tests.store.conftest import GRAPH, new
from tests.unit.test_store import traced_store


@pytest.mark.parametrize(
    ("prefix", "end"),
    [
        ("night", "nighu"),
        ("a\U0010ffff", "b"),
        ("\U0010ffff", None),
        ("x\ud7ff", "x\ue000"),  # past the surrogates, which text never holds
        ("é", "ê"),
    ],
)
def test_a_prefix_range_ends_above_every_text_that_starts_with_it(
    prefix: str, end: str | None
) -> None:
    assert prefix_end(prefix) == end
    assert Selection(name=prefix).name_range == (prefix, end)
    for text in (prefix, prefix + "\U0010ffff" * 3, prefix + "a"):
        assert end is None or prefix <= text < end


def test_terms_in_their_order() -> None:
    assert EVERY.empty and EVERY.terms() == ((False,) * 6, [])
    chosen = Selection(name="ab", created_to=5, updated_from=1)
    assert chosen.terms() == ((True, True, False, True, True, False), ["ab", "ac", 5, 1])


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "sidetask.db"


#: (label, the selection, the monkeypatched bounds, the index the list must read, a sort)
WAYS = [
    ("name by its index", Selection(name="job"), {}, "tasks_by_graph_name", True),
    # one name: its range of the index in id order, as a status's; several: each one's
    # range read to the limit, then merged
    ("one name", Selection(name="job 1"), {"SELECTION_PROBE": 1}, "tasks_by_graph_name", False),
    ("names a name at a time", Selection(name="job"), {"SELECTION_PROBE": 1}, "tasks_by_graph_name", True),
    ("name in id order", Selection(name="job"), {"SELECTION_PROBE": 1, "NAMES_AT_MOST": 0}, "tasks_by_graph", False),
    ("created by its index", Selection(created_from=0), {}, "tasks_by_graph_create", True),
    ("created between its ids", Selection(created_from=0), {"SELECTION_PROBE": 1}, "tasks_by_graph", False),
    ("updated by its index", Selection(updated_to=2**53), {}, "tasks_by_graph_update", True),
    ("updated in id order", Selection(updated_to=2**53), {"SELECTION_PROBE": 1, "ID_RANGE_AT_MOST": 0}, "tasks_by_graph", False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "selection", "bounds", "index", "sorts"), WAYS, ids=[w[0] for w in WAYS]
)
async def test_each_way_of_reading_a_selection_reads_its_index(
    db: Path,
    monkeypatch: pytest.MonkeyPatch,
    label: str,
    selection: Selection,
    bounds: dict[str, int],
    index: str,
    sorts: bool,
) -> None:
    for name, value in bounds.items():
        monkeypatch.setattr(sqlite_store, name, value)
    store, statements = traced_store(db)
    await store.open()
    try:
        made = [(await store.insert(new(name=f"job {n % 3}")))[0] for n in range(9)]
        assert clock.now_ms() >= made[-1].create_ms
        if selection.name == "job 1":
            made = made[1::3]
        lists: set[str] = set()
        pages: list[str] = []  # without a status, ascending: the one whose index is checked
        for status in (None, Status.NEW):
            for descending in (False, True):
                statements.clear()
                listed = await store.list_tasks(
                    GRAPH, status, 100, 0, descending=descending, selection=selection
                )
                assert [t.id for t in listed] == sorted((t.id for t in made), reverse=descending)
                these = {s for s in statements if s.startswith("SELECT") and "LIMIT" in s}
                pages.extend(s for s in these if "json_group_array" in s)
                lists |= these
    finally:
        await store.close()
    with sqlite3.connect(db) as conn:
        for sql in lists:
            plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
            scans = [s for s in plan if s.startswith("SCAN tasks") and "INDEX" not in s]
            assert not scans, f"{sql}\n{plan}"
        page = pages[0]
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {page}")]
        assert any(f"INDEX {index} " in step for step in plan), plan
        assert any("TEMP B-TREE" in step for step in plan) is sorts, plan
    conn.close()
