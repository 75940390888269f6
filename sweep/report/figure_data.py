"""The numbers each figure draws, as a small CSV beside its PNG (``<figure>.csv``).

Each function here computes what its figure in ``sweep.report.figures``
plots, from the same tables (``best_curves``, ``curve_band``, ...), so the
CSV and the PNG cannot disagree. The frontier and importance figures have
theirs in ``sweep.report.frontier`` and ``sweep.report.importance``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sweep.report.tables import (
    GROUP,
    ZERO_SHOT,
    best_curves,
    curve_band,
    full_budget_runs,
    in_group,
    swept_params,
    zero_shot_summary,
)

__all__ = ["accuracy_vs_queries_data", "queries_to_target_data", "sensitivity_data",
           "write_csv"]

# Enough digits for any accuracy or query count, none of float noise (0.6100000000000001).
_FLOAT_FORMAT = "%.10g"


def write_csv(frame: pd.DataFrame, figure: Path) -> Path:
    """Write ``frame`` beside the figure ``figure`` (same name, ``.csv``); returns its path."""
    path = Path(figure).with_suffix(".csv")
    frame.to_csv(path, index=False, float_format=_FLOAT_FORMAT)
    return path


def accuracy_vs_queries_data(trials: pd.DataFrame, curves: pd.DataFrame,
                             best: pd.DataFrame) -> pd.DataFrame:
    """``accuracy_vs_queries.png``: per group, method and metric (``test_acc``, ``val_acc``),
    the mean, min and max over seeds at each query count (``curve_band``), and each
    group's zero-shot line (``method`` zero-shot, no query count)."""
    seeds = best_curves(trials, curves, best)
    zs = zero_shot_summary(trials)
    parts = []
    for key, group in seeds.groupby(GROUP, sort=True):
        for method, mc in group.groupby("method", sort=True):
            for metric in ("test_acc", "val_acc"):
                parts.append(curve_band(mc, metric).assign(**dict(zip(GROUP, key)),
                                                           method=method, metric=metric))
        z = zs[(zs["dataset"] == key[0]) & (zs["shots"] == key[1])]
        if len(z):
            parts.append(pd.DataFrame({**dict(zip(GROUP, key)), "method": ZERO_SHOT,
                                       "metric": ["test_acc", "val_acc"],
                                       "mean": [z["test_mean"].iloc[0], z["val_mean"].iloc[0]]}))
    cols = [*GROUP, "method", "metric", "queries", "mean", "lo", "hi", "n"]
    if not parts:
        return pd.DataFrame(columns=cols)
    return pd.concat(parts, ignore_index=True).reindex(columns=cols)


def queries_to_target_data(qt: pd.DataFrame, best: pd.DataFrame) -> pd.DataFrame:
    """``queries_to_target.png``: each seed's queries to the target (NaN: never reached),
    the median over the method's seeds (the bar; inf: not reached) and the group's
    largest budget (the dotted line)."""
    out = qt.copy()
    q = out["queries"].fillna(np.inf)
    out["median"] = q.groupby([out[c] for c in [*GROUP, "method"]]).transform("median")
    budget = best.groupby(GROUP)["budget"].max().rename("largest_budget").reset_index()
    return out.merge(budget, on=GROUP, how="left")


def sensitivity_data(trials: pd.DataFrame, key: tuple) -> pd.DataFrame:
    """``sensitivity*.png`` of the group ``key``: per swept parameter, each trial of a method
    that varies it: its value and final validation accuracy (hollow when ``stopped``)."""
    group = full_budget_runs(trials[(trials["status"] != "failed") & (trials["method"] != ZERO_SHOT)])
    group = in_group(group.rename(columns={"budget_unit": "unit"}), key)
    parts = []
    for name in swept_params(group):
        col = f"param_{name}"
        varies = group[group[col].notna()].groupby("method")[col].nunique()
        have = group[group[col].notna() & group["method"].isin(varies[varies > 1].index)]
        parts.append(pd.DataFrame({
            **{c: have[c] for c in GROUP}, "parameter": name, "method": have["method"],
            "trial_id": have["trial_id"], "seed": have["seed"], "value": have[col].astype(object),
            "final_val_acc": have["final_val_acc"], "status": have["status"]}))
    cols = [*GROUP, "parameter", "method", "trial_id", "seed", "value", "final_val_acc", "status"]
    return pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)
