"""The main table of a sweep report, as the field reads it: methods x data sets (pandas).

One table per shot count, query unit and budget level (methods counted in
different units are never compared). A cell is the test accuracy of the
method's setting chosen on validation at the level (``best_settings``), mean
± std over seeds. Rows: zero-shot first (no queries: the same at every
level), then the black-box methods, then the white-box ones (``black_box``
false: CoOp with true gradients, an upper bound). Two more columns:

* ``average``: the mean over the table's data sets of the cells' means, only
  for a row with every data set (blank otherwise);
* ``avg rank``: per data set the black-box methods are ranked by mean test
  accuracy (1 = best; ties share the average of the ranks they span), and
  the ranks are averaged over the data sets, only for a method ranked on
  every one. Zero-shot and white-box rows are shown without a rank: they are
  references, not competitors.

A budget level is a fraction of each group's budget (``level_fraction``), so
data sets with different budgets (published ones) share a table.
``main_table.csv`` holds every table in one long frame (:func:`main_table`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sweep.report.tables import UNIT_LABELS, ZERO_SHOT, usable_trials, zero_shot_summary

__all__ = ["AVERAGE", "MAIN_COLUMNS", "main_table", "render_main_tables", "white_box_note"]

#: The ``dataset`` of a row's average over the data sets (and its average rank).
AVERAGE = "average"
#: The kinds of row, in table order.
KINDS = ("zero-shot", "black-box", "white-box")
MAIN_COLUMNS = ["shots", "unit", "level_fraction", "kind", "method", "dataset", "budget",
                "n_seeds", "val_mean", "val_std", "test_mean", "test_std", "rank"]
# Means of the same accuracies summed in another order differ in the last bits: ranks
# compare them rounded.
_DECIMALS = 9


def _cells(trials: pd.DataFrame, best: pd.DataFrame) -> pd.DataFrame:
    """One row per table, row and data set: the cell's numbers (no rank yet)."""
    zs = zero_shot_summary(trials)
    keys = ["shots", "unit", "level_fraction"]
    parts = []
    for (shots, unit, level), g in best.groupby(keys, sort=True):
        cells = g.assign(kind=np.where(g["black_box"], "black-box", "white-box"))
        z = zs[(zs["shots"] == shots) & zs["dataset"].isin(set(g["dataset"]))]
        if len(z):
            z = z.assign(shots=shots, unit=unit, level_fraction=level, kind="zero-shot",
                         method=ZERO_SHOT, budget=0)
        parts += [cells, z] if len(z) else [cells]
    if not parts:
        return pd.DataFrame(columns=MAIN_COLUMNS[:-1])
    out = pd.concat(parts, ignore_index=True)[MAIN_COLUMNS[:-1]]
    # A method without a checkpoint within the level has no cell.
    return out[out["test_mean"].notna()].reset_index(drop=True)


def main_table(trials: pd.DataFrame, best: pd.DataFrame) -> pd.DataFrame:
    """Every main table in one long frame (also ``main_table.csv``).

    Args:
        trials: the trials table (zero-shot rows come from its zero-shot trials).
        best: :func:`~sweep.report.tables.best_settings` of the tables.

    Returns:
        ``MAIN_COLUMNS``: one row per table (``shots``, ``unit``,
        ``level_fraction``), row (``kind``: zero-shot, black-box or white-box;
        ``method``) and data set, with the level in queries (``budget``, 0 for
        zero-shot), ``n_seeds``, validation and test ``*_mean``/``*_std`` over
        seeds and the black-box ``rank`` on that data set; then per table and
        row one with ``dataset`` = ``"average"``: the means over the data sets
        and the average rank (NaN where the row lacks a data set, or is not ranked).
    """
    cells = _cells(trials, best)
    cells["rank"] = np.nan
    table_keys = ["shots", "unit", "level_fraction"]
    ranked = cells["kind"] == "black-box"
    score = cells.loc[ranked, "test_mean"].astype(float).round(_DECIMALS)
    cells.loc[ranked, "rank"] = score.groupby(
        [cells.loc[ranked, k] for k in [*table_keys, "dataset"]]).rank(ascending=False,
                                                                        method="average")
    rows = []
    for key, table in cells.groupby(table_keys, sort=True):
        datasets = set(table["dataset"])
        for (kind, method), r in table.groupby(["kind", "method"], sort=True):
            full = set(r["dataset"]) == datasets
            rank_all = full and kind == "black-box" and bool(r["rank"].notna().all())
            rows.append({**dict(zip(table_keys, key)), "kind": kind, "method": method,
                         "dataset": AVERAGE, "budget": np.nan, "n_seeds": np.nan,
                         "val_mean": r["val_mean"].mean() if full else np.nan, "val_std": np.nan,
                         "test_mean": r["test_mean"].mean() if full else np.nan,
                         "test_std": np.nan, "rank": r["rank"].mean() if rank_all else np.nan})
    out = pd.concat([cells, pd.DataFrame(rows, columns=MAIN_COLUMNS)], ignore_index=True)
    order = {k: i for i, k in enumerate(KINDS)}
    out["_kind"] = out["kind"].map(order)
    out["_avg"] = out["dataset"] == AVERAGE
    out = out.sort_values(["shots", "unit", "level_fraction", "_kind", "method", "_avg",
                           "dataset"], ascending=[True, True, False, True, True, True, True])
    out = out.drop(columns=["_kind", "_avg"]).reset_index(drop=True)
    for col in ("budget", "n_seeds"):
        out[col] = out[col].astype("Int64")
    return out[MAIN_COLUMNS]


def _pct(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "–"
    return f"{100 * mean:.1f}" if pd.isna(std) else f"{100 * mean:.1f} ± {100 * std:.1f}"


def _level_text(level: float) -> str:
    from fractions import Fraction

    if np.isclose(level, 1.0):
        return "full budget"
    frac = Fraction(level).limit_denominator(1000)
    text = str(frac) if abs(float(frac) - level) < 1e-6 else f"{level:.3g}"
    return f"{text} of the budget"


def _budget_text(table: pd.DataFrame, unit: str) -> str:
    budgets = table.loc[(table["kind"] != "zero-shot") & (table["dataset"] != AVERAGE), "budget"]
    label = UNIT_LABELS.get(unit, unit)
    lo, hi = int(budgets.min()), int(budgets.max())
    if lo == hi:
        return f"{lo:,} {label}"
    return f"{lo:,}–{hi:,} {label}, by data set"


def _label(kind: str, method: str) -> str:
    return {"zero-shot": "zero-shot (no queries)",
            "white-box": f"{method} (white-box)"}.get(kind, method)


def render_main_tables(table: pd.DataFrame) -> list[str]:
    """The main tables as Markdown lines (a ``## Main table`` section), full budget first."""
    if table.empty:
        return []
    lines = ["", "## Main table", "",
             "Test accuracy (%) of each method's setting chosen on validation at the budget "
             "level, mean ± std over seeds. Average: over the data sets, for a row with every "
             "one. Avg rank: per data set the black-box methods are ranked by mean test accuracy "
             "(1 = best, ties share the average rank), averaged over the data sets; zero-shot "
             "and white-box rows are references, not ranked. Numbers: `main_table.csv`."]
    keys = ["shots", "unit", "level_fraction"]
    for (shots, unit, level), t in table.groupby(keys, sort=False):
        datasets = sorted(set(t["dataset"]) - {AVERAGE})
        several = len(datasets) > 1
        lines += ["", f"### {shots} shots, {_level_text(level)} "
                      f"({_budget_text(t, unit)})", ""]
        header = ["method", *datasets, *(["average"] if several else []), "avg rank"]
        rule = ["---", *(["---:"] * (len(header) - 1))]
        lines += ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
        for (kind, method), r in t.groupby(["kind", "method"], sort=False):
            cells = r.set_index("dataset")
            row = [_label(kind, method)]
            for d in datasets:
                row.append(_pct(cells.loc[d, "test_mean"], cells.loc[d, "test_std"])
                           if d in cells.index else "–")
            avg = cells.loc[AVERAGE]
            if several:
                row.append(_pct(avg["test_mean"], np.nan))
            row.append("–" if pd.isna(avg["rank"]) else f"{avg['rank']:.2f}")
            lines.append("| " + " | ".join(row) + " |")
    return lines


def white_box_note(trials: pd.DataFrame) -> list[str]:
    """Where the white-box rows come from, when the sweep has any white-box method."""
    white = sorted(set(trials.loc[~trials["black_box"].astype(bool), "method"]))
    if not white:
        return []
    ran = sorted(set(usable_trials(trials).loc[lambda t: t["method"].isin(white), "method"]))
    failed = [m for m in white if m not in ran]
    lines = [""]
    if ran:
        lines.append(f"White-box rows ({', '.join(ran)}: true gradients, an upper bound) come "
                     "from the sweep's own oracle pool, whose actors hold the model locally "
                     "and serve white-box methods true gradients through autograd (a glass-box "
                     "oracle, as `python -m sweep.compare` builds one); no black-box method "
                     "is served a gradient.")
    if failed:
        lines.append(f"{', '.join(failed)}: every trial failed (see the trials table's "
                     "`error`).")
    return lines
