"""Each result beside the published number it sets out to reproduce (``[targets]``).

A result is what the report reads everywhere else: the method's setting chosen
on validation at its full budget (``best_settings``, by the sweep's ``[search]
metric``), its
test accuracy as mean ± std over seeds. Test accuracy is reported, never
used to choose.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sweep.report.tables import best_settings
from sweep.spec import TargetsSection

__all__ = ["render_targets", "target_comparison"]

COLUMNS = ["method", "dataset", "shots", "target", "result", "result_std", "n_seeds", "difference"]


def target_comparison(trials: pd.DataFrame, curves: pd.DataFrame, targets: TargetsSection,
                      best: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per target: ``target`` and ``result`` in percent (NaN: not run, or no seed
    completed), ``result_std``, ``n_seeds`` and ``difference`` = result - target."""
    best = best_settings(trials, curves) if best is None else best
    full = best[np.isclose(best["fraction"], 1.0) & best["sample_id"].notna()
                & (best["shots"] == targets.shots)]
    rows = []
    for (method, dataset), target in targets.accuracy.items():
        found = full[(full["method"] == method) & (full["dataset"] == dataset)]
        if len(found):
            row = found.iloc[0]
            result, std, seeds = 100 * row["test_mean"], 100 * row["test_std"], int(row["n_seeds"])
        else:
            result, std, seeds = np.nan, np.nan, 0
        rows.append((method, dataset, targets.shots, target, result, std, seeds, result - target))
    return pd.DataFrame(rows, columns=COLUMNS)


def render_targets(table: pd.DataFrame, targets: TargetsSection) -> str:
    """The comparison as a Markdown section (also what the command line prints)."""
    lines = ["## Published targets", "", f"Source: {targets.source}. Result: test accuracy of "
             "the setting chosen on validation at the full budget, mean ± std over seeds.", "",
             "| method | data set | shots | target | result | difference |",
             "|---|---|---|---|---|---|"]
    for r in table.itertuples():
        if np.isnan(r.result):
            result, diff = "not run", "-"
        else:
            spread = "" if np.isnan(r.result_std) else f" ± {r.result_std:.1f}"
            result, diff = f"{r.result:.1f}{spread} ({r.n_seeds} seeds)", f"{r.difference:+.1f}"
        lines.append(f"| {r.method} | {r.dataset} | {r.shots} | {r.target:.2f} | {result} | "
                     f"{diff} |")
    ran = table.dropna(subset=["result"])
    if len(ran):
        lines += ["", f"Mean difference over the {len(ran)} targets run: "
                  f"{ran['difference'].mean():+.1f} points."]
    return "\n".join(lines) + "\n"
