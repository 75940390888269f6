"""``[targets]``: the published accuracies a reproduction sets out to reach (sweeps/reproduce/)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sweep.spec.sections import DataSection, SearchSection, TargetsSection

__all__ = ["parse_targets"]


def parse_targets(parser, data: Mapping[str, Any], search: SearchSection,
                  data_section: DataSection) -> TargetsSection | None:
    """``[targets]``: ``source``, ``shots`` and one table per swept method, data set =
    published test accuracy in percent; ``parser`` is the specification's (its checks and
    one-line errors)."""
    if "targets" not in data:
        return None
    table = parser.any_table(data, "", "targets")
    source = parser.str_(table, "targets", "source")
    shots = parser.int_(table, "targets", "shots", 16)
    if shots not in data_section.shots:
        parser.fail("targets.shots", f"{shots} is not among data.shots {list(data_section.shots)}")
    accuracy: dict[tuple[str, str], float] = {}
    for method, numbers in table.items():
        if method in ("source", "shots"):
            continue
        prefix = f"targets.{method}"
        if method not in search.methods:
            parser.fail(prefix, f"{method!r} is not among search.methods")
        numbers = parser.table(table, "targets", method, list(data_section.datasets))
        for dataset in numbers:
            accuracy[(method, dataset)] = parser.float_(numbers, prefix, dataset, above=0.0,
                                                        high=100.0)
    return TargetsSection(source=source, shots=shots, accuracy=accuracy)
