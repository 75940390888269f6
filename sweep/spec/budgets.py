"""Parsing ``[budget]`` and a method's ``budget``: a limit, a published budget, or budget levels.

A mixin of the specification's parser (``sweep.spec.parser._Parser``, whose
``int_``, ``float_``, ``str_``, ``array`` and ``fail`` it uses), kept apart so
that each module holds one concern.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sweep.budget import UNITS
from sweep.spec.published import has_published_budget
from sweep.spec.sections import BudgetSection

__all__ = ["PUBLISHED", "REQUIRED", "BudgetParsing"]

#: A key with no default: the parser's ``int_`` and the like fail when it is missing.
REQUIRED = object()
#: ``limit = "published"`` (or ``budget = "published"``): each method's published budget.
PUBLISHED = "published"


class BudgetParsing:
    """``budget`` and ``published_ok`` of the parser."""

    def budget(self, table: Mapping[str, Any], prefix: str, defaults: BudgetSection,
               *, full: bool) -> BudgetSection:
        """``[budget]`` (``full``: limit or limits required, checkpoints allowed) or a method's.

        ``limit = "published"`` stands for each method's published budget (in its own unit,
        so ``unit`` and ``batch_size`` are refused beside it), ``fraction`` for a share of it.
        ``limits = [...]`` gives budget levels: query counts (the largest is the limit), or
        with a published budget fractions of it (the largest is the fraction).
        """
        checkpoints = self.int_(table, prefix, "checkpoints", defaults.checkpoints, low=8)
        published = table.get("limit") == PUBLISHED
        limits = self.limits(table, prefix, published)
        if published:
            for key in ("unit", "batch_size"):
                if key in table:
                    self.fail(f"{prefix}.{key}", "a published budget has its method's own "
                              f"{key.replace('_', ' ')}; remove it")
            if limits and "fraction" in table:
                self.fail(f"{prefix}.fraction", "limits are fractions of the published budget "
                          "already; remove fraction")
            fraction = max(limits) if limits else self.float_(table, prefix, "fraction", 1.0,
                                                              above=0.0, high=1.0)
            return BudgetSection(published=True, fraction=fraction, limit=0,
                                 checkpoints=checkpoints, limits=limits)
        if "fraction" in table:
            self.fail(f"{prefix}.fraction", 'a fraction is of a published budget: limit = '
                      '"published"')
        unit = self.str_(table, prefix, "unit", defaults.unit, choices=UNITS, what="budget unit")
        required = (full or defaults.published) and not limits
        limit = self.int_(table, prefix, "limit", REQUIRED if required
                          else max(limits) if limits else defaults.limit, low=1)
        if limits and limit != max(limits):
            self.fail(f"{prefix}.limit", f"the limit is the largest of the limits "
                      f"({max(limits)}); got {limit}")
        batch_size = self.int_(table, prefix, "batch_size", defaults.batch_size, low=1)
        return BudgetSection(unit=unit, limit=limit, batch_size=batch_size,
                             checkpoints=checkpoints, limits=limits, levels=limits)

    def limits(self, table: Mapping[str, Any], prefix: str, published: bool) -> tuple:
        """``limits``: increasing query counts >= 1, or fractions in (0, 1] of a published
        budget; () when absent."""
        if "limits" not in table:
            return ()
        key = f"{prefix}.limits"
        values = self.array(table, prefix, "limits")
        ok = bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                  for v in values)
        if ok and published:
            ok = all(0 < v <= 1 for v in values)
            what = "fractions in (0, 1] of the published budget, e.g. [0.125, 0.5, 1.0]"
        else:
            ok = ok and all(isinstance(v, int) and v >= 1 for v in values)
            what = "query counts >= 1, e.g. [400, 1600, 6400]"
        if not ok or list(values) != sorted(set(values)):
            self.fail(key, f"limits must be increasing {what}; got {values!r}")
        return tuple(values)

    def published_ok(self, method: str, where: str) -> None:
        if not has_published_budget(method):
            self.fail(where, f"{method} has no published budget; give it a budget of its own "
                             f"([methods.{method}] budget = {{ limit = ... }})")
