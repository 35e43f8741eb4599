"""The README's settings table (section "Configuration") against service.config.Settings:
every setting has a row, and every row is a setting."""

from __future__ import annotations

import dataclasses
import re

from service.config import Settings
from tests.conftest import ROOT

#: a row of the table: | `name` | default | meaning |
ROW = re.compile(r"^\| `([a-z_]+)` \|", re.MULTILINE)


def settings_table() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    header = section.index("| setting | default | meaning |")
    table = section[header:].split("\n\n", 1)[0]
    return ROW.findall(table)


def test_every_setting_is_in_the_readme_table_and_nothing_else_is() -> None:
    listed = settings_table()
    fields = [f.name for f in dataclasses.fields(Settings)]
    assert sorted(set(fields) - set(listed)) == [], "settings missing from the README's table"
    assert sorted(set(listed) - set(fields)) == [], "rows of the README's table that are no setting"
    assert len(listed) == len(set(listed)), "a setting listed twice"
