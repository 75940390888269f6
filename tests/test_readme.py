"""The README's method table and fidelity table against the registered methods and defaults."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import methods

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _table(heading_line: str) -> list[list[str]]:
    """The cells of the first table after the line that starts with ``heading_line``."""
    lines = README.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(heading_line))
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
        elif rows:
            break
    return rows[1:]  # past the rule under the header


def test_the_method_table_lists_every_registered_method():
    rows = _table("| name | what | search space | budget (default) |")
    listed = {name for row in rows for name in re.findall(r"`([a-z0-9-]+)`", row[0])}
    assert listed == set(methods.REGISTRY.names())


def test_the_fidelity_table_matches_the_registered_defaults_and_versions():
    rows = _table("| method (version) | setting | release (file) | promptsweep default |")
    checked = set()
    for row in rows:
        name, version = re.fullmatch(r"`([a-z0-9-]+)` \((\d+)\)", row[0]).groups()
        assert int(version) == methods.REGISTRY.version(name), name
        config = methods.REGISTRY.make_config(name)
        pairs = re.findall(r"`(\w+) = ([^`]+)`", row[3])
        assert pairs, row
        for field, value in pairs:
            assert getattr(config, field) == ast.literal_eval(value), (name, field)
            checked.add((name, field))
    # every published method has a row
    assert {n for n, _ in checked} >= {"bpt-vlm", "bbt", "cbbt", "cbbt-tip", "zip",
                                       "blackvip-tokens"}
