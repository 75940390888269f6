"""The tables of a sweep report: best settings per budget, curves, queries to a target (pandas).

The protocol is the honest one: a setting (a ``sample_id``: one
hyperparameter setting, its seeds being the rows that share it) is chosen by
its mean validation accuracy over seeds only; test accuracy is reported for
the chosen setting, never used to choose. At a budget level B a trial counts
with its last checkpoint that used at most B queries, in the trials'
``budget_unit``: the prompt it would have returned had it been given B.
Methods counted in different units are never compared: every table and
figure is grouped by (data set, shots, unit). Failed trials are left out;
trials stopped early by the scheduler count with the checkpoints they
reached.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from sweep.budget import UNITS

__all__ = [
    "DEFAULT_FRACTIONS", "GROUP", "TARGET_FRACTION", "UNIT_LABELS", "ZERO_SHOT", "best_curves",
    "best_settings", "budget_levels", "checkpoint_table", "curve_band", "default_targets",
    "in_group", "param_column_names", "plain_value", "queries_to_target", "swept_params",
    "target_summary", "tuned_trials", "usable_trials", "zero_shot_summary",
]

#: Budget levels of the tables, as fractions of the group's budget: the checkpoints are
#: spaced geometrically, so halving steps show the same shape the curves do.
DEFAULT_FRACTIONS = (0.125, 0.25, 0.5, 1.0)
#: The default target of queries-to-target: this fraction of the best final validation
#: accuracy of any black-box setting in the group.
TARGET_FRACTION = 0.9
#: What is compared together: one data set, one shot count, one query unit.
GROUP = ["dataset", "shots", "unit"]
ZERO_SHOT = "zero-shot"
UNIT_LABELS = {"candidate_evals": "candidate evaluations", "calls": "mini-batch calls",
               "images": "images", "text_sequences": "text sequences"}
# Accuracies are ratios of small integers; a target computed as 0.9 x 0.8 must count
# as reached by an accuracy of exactly 0.72.
_EPS = 1e-9


def usable_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials that did not fail, zero-shot included."""
    return trials[trials["status"] != "failed"]


def tuned_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials that did not fail, of methods that have settings to choose (not zero-shot)."""
    usable = usable_trials(trials)
    return usable[usable["method"] != ZERO_SHOT]


def param_column_names(trials: pd.DataFrame) -> list[str]:
    """The ``param_<name>`` columns of a trials table."""
    return [c for c in trials.columns if c.startswith("param_")]


def plain_value(value: Any) -> Any:
    """A numpy scalar as a Python one (for JSON and text)."""
    return value.item() if isinstance(value, np.generic) else value


def _setting_params(trials: pd.DataFrame, sample_id: str) -> dict[str, Any]:
    """The non-null hyperparameters of a setting (its seeds share them)."""
    row = trials[trials["sample_id"] == sample_id].iloc[0]
    return {c.removeprefix("param_"): plain_value(row[c]) for c in param_column_names(trials)
            if not pd.isna(row[c])}


def checkpoint_table(trials: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """The usable trials' checkpoints with their setting, group and queries in the trial's unit.

    Returns:
        One row per checkpoint with a measured validation accuracy: ``trial_id``,
        ``sample_id``, ``method``, ``seed``, ``black_box``, ``dataset``, ``shots``,
        ``unit``, ``checkpoint``, ``queries``, ``val_acc``, ``test_acc``; sorted by
        trial and checkpoint.
    """
    meta = usable_trials(trials)[["trial_id", "sample_id", "black_box", "dataset", "shots",
                            "budget_unit"]].rename(columns={"budget_unit": "unit"})
    cp = curves.merge(meta, on="trial_id", how="inner")
    queries = np.full(len(cp), np.nan)
    for unit in UNITS:
        mask = (cp["unit"] == unit).to_numpy()
        queries[mask] = cp.loc[mask, f"queries_{unit}"].to_numpy(dtype=float)
    cp["queries"] = queries
    cp = cp[cp["val_acc"].notna()]
    cols = ["trial_id", "sample_id", "method", "seed", "black_box", *GROUP, "checkpoint",
            "queries", "val_acc", "test_acc"]
    return cp[cols].sort_values(["trial_id", "checkpoint"]).reset_index(drop=True)


def budget_levels(trials: pd.DataFrame,
                  fractions: Sequence[float] = DEFAULT_FRACTIONS) -> dict[tuple, list[int]]:
    """Budget levels per group: ``fractions`` of the largest budget of the group's trials.

    A trial without a budget (unlimited) counts with the queries it used.
    """
    tuned = tuned_trials(trials).rename(columns={"budget_unit": "unit"})
    out: dict[tuple, list[int]] = {}
    for key, g in tuned.groupby(GROUP, sort=True):
        used = g.apply(lambda r: r[f"queries_{r['unit']}"], axis=1).astype(float)
        full = float(g["budget"].astype(float).fillna(used).max())
        out[key] = sorted({max(1, math.ceil(f * full - _EPS)) for f in fractions})
    return out


def in_group(df: pd.DataFrame, key: tuple) -> pd.DataFrame:
    """The rows of ``df`` (with the ``GROUP`` columns) in the group ``key``."""
    mask = np.ones(len(df), dtype=bool)
    for col, value in zip(GROUP, key):
        mask &= (df[col] == value).to_numpy()
    return df[mask]


def _values_at(cp: pd.DataFrame, budget: float) -> pd.DataFrame:
    """Each trial's last checkpoint within ``budget`` queries (trials with none are absent)."""
    return cp[cp["queries"] <= budget].groupby("trial_id", sort=False).tail(1)


def _choose(at: pd.DataFrame) -> pd.DataFrame:
    """Per setting: mean/std over seeds, sorted best first by validation only."""
    per = at.groupby("sample_id").agg(
        n_seeds=("val_acc", "size"), val_mean=("val_acc", "mean"), val_std=("val_acc", "std"),
        test_mean=("test_acc", "mean"), test_std=("test_acc", "std"),
        queries=("queries", "mean")).reset_index()
    # Ties go to the setting with more seeds behind its mean, then to the first id:
    # deterministic, and test accuracy never breaks a tie.
    return per.sort_values(["val_mean", "n_seeds", "sample_id"],
                           ascending=[False, False, True]).reset_index(drop=True)


def best_settings(trials: pd.DataFrame, curves: pd.DataFrame,
                  fractions: Sequence[float] = DEFAULT_FRACTIONS) -> pd.DataFrame:
    """The best setting of each method at each budget level, chosen by validation accuracy.

    Args:
        trials: the trials table (failed trials and zero-shot are left out here).
        curves: the curves table.
        fractions: budget levels as fractions of each group's budget.

    Returns:
        One row per group (``dataset``, ``shots``, ``unit``), method and budget
        level: ``method``, ``black_box``, ``fraction``, ``budget`` (the level),
        ``sample_id`` of the setting with the highest mean validation accuracy
        over seeds at the level, ``n_seeds``, ``val_mean``, ``val_std``,
        ``test_mean``, ``test_std`` (std over seeds, ddof 1: NaN for one seed),
        ``queries`` (mean queries at the checkpoints used), ``n_settings``
        (settings compared) and ``params`` (the setting's hyperparameters).
        A method with no checkpoint within a level has NaN metrics there.
    """
    cp = checkpoint_table(tuned_trials(trials), curves)
    levels_of = budget_levels(trials, fractions)
    rows = []
    for key, group in cp.groupby(GROUP, sort=True):
        levels = levels_of[key]
        for method, mcp in group.groupby("method", sort=True):
            black_box = bool(mcp["black_box"].iloc[0])
            for level in levels:
                ranked = _choose(_values_at(mcp, level))
                row: dict[str, Any] = dict(zip(GROUP, key), method=method, black_box=black_box,
                                           fraction=level / levels[-1], budget=level,
                                           n_settings=len(ranked))
                if len(ranked):
                    best = ranked.iloc[0]
                    row.update(best.to_dict(),
                               params=_setting_params(trials, best["sample_id"]))
                else:
                    row.update(sample_id=None, n_seeds=0, params={})
                rows.append(row)
    cols = [*GROUP, "method", "black_box", "fraction", "budget", "sample_id", "n_seeds",
            "val_mean", "val_std", "test_mean", "test_std", "queries", "n_settings", "params"]
    out = pd.DataFrame(rows, columns=cols)
    out["n_seeds"] = out["n_seeds"].astype(int)
    return out


def _full(best: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``best`` at the full budget of each group, with a setting."""
    return best[np.isclose(best["fraction"], 1.0) & best["sample_id"].notna()]


def best_curves(trials: pd.DataFrame, curves: pd.DataFrame,
                best: pd.DataFrame | None = None) -> pd.DataFrame:
    """The checkpoints of every seed of each method's best setting at the full budget."""
    best = best_settings(trials, curves) if best is None else best
    cp = checkpoint_table(tuned_trials(trials), curves)
    keys = _full(best)[[*GROUP, "method", "sample_id"]]
    return cp.merge(keys, on=[*GROUP, "method", "sample_id"], how="inner")


def curve_band(seed_curves: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean, min and max over seeds of ``metric`` at every query count any seed was checked at.

    Between its checkpoints a seed holds the value of its last one (the prompt
    it would return); before its first it has none. Counts of 0 are dropped
    (log axes).

    Returns:
        ``queries``, ``mean``, ``lo``, ``hi``, ``n`` (seeds with a value).
    """
    pts = np.unique(seed_curves.loc[seed_curves["queries"] > 0, "queries"].to_numpy(float))
    values = []
    for _, s in seed_curves[seed_curves[metric].notna()].groupby("seed"):
        s = s.sort_values("queries")
        idx = np.searchsorted(s["queries"].to_numpy(float), pts, side="right") - 1
        v = s[metric].to_numpy(float)[np.clip(idx, 0, None)]
        values.append(np.where(idx >= 0, v, np.nan))
    arr = np.vstack(values) if values else np.empty((0, len(pts)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: no seed yet
        return pd.DataFrame({"queries": pts, "mean": np.nanmean(arr, axis=0),
                             "lo": np.nanmin(arr, axis=0), "hi": np.nanmax(arr, axis=0),
                             "n": np.sum(~np.isnan(arr), axis=0)})


def default_targets(best: pd.DataFrame) -> dict[tuple, float]:
    """Per group: ``TARGET_FRACTION`` of the best full-budget mean validation accuracy.

    Black-box methods only when the group has any: a white-box upper bound
    would set a target no black-box method is meant to reach.
    """
    out = {}
    for key, g in _full(best).groupby(GROUP, sort=True):
        pool = g[g["black_box"]] if g["black_box"].any() else g
        out[key] = TARGET_FRACTION * float(pool["val_mean"].max())
    return out


def queries_to_target(trials: pd.DataFrame, curves: pd.DataFrame, target: float | None = None,
                      best: pd.DataFrame | None = None) -> pd.DataFrame:
    """Queries each seed of each method's best setting needs to first reach a validation target.

    Args:
        trials, curves: the tables.
        target: the validation accuracy to reach (a fraction); None: the
            default of :func:`default_targets`, per group.
        best: :func:`best_settings` of the tables (computed if None).

    Returns:
        One row per group, method and seed of the method's full-budget best
        setting: ``sample_id``, ``seed``, ``target``, ``queries`` (the first
        checkpoint's count with ``val_acc >= target``; NaN if none) and ``reached``.
    """
    best = best_settings(trials, curves) if best is None else best
    targets = default_targets(best)
    rows = []
    for (*key, method), seeds in best_curves(trials, curves, best).groupby(
            [*GROUP, "method"], sort=True):
        goal = target if target is not None else targets[tuple(key)]
        for seed, s in seeds.groupby("seed", sort=True):
            hit = s[s["val_acc"] >= goal - _EPS]
            q = float(hit["queries"].iloc[0]) if len(hit) else math.nan
            rows.append(dict(zip(GROUP, key), method=method,
                             black_box=bool(s["black_box"].iloc[0]),
                             sample_id=s["sample_id"].iloc[0], seed=int(seed), target=goal,
                             queries=q, reached=not math.isnan(q)))
    cols = [*GROUP, "method", "black_box", "sample_id", "seed", "target", "queries", "reached"]
    return pd.DataFrame(rows, columns=cols)


def target_summary(qt: pd.DataFrame) -> pd.DataFrame:
    """Per group and method: seeds that reached the target and the median queries.

    A seed that never reached counts as infinitely many queries, so the median
    is infinite ("not reached") unless more than half of the seeds reached it.
    """
    keys = [*GROUP, "method"]
    rows = []
    for k, g in qt.groupby(keys, sort=True):
        q = g["queries"].fillna(math.inf).to_numpy(float)
        rows.append({**dict(zip(keys, k)), "target": float(g["target"].iloc[0]),
                     "n_seeds": len(q), "n_reached": int(g["reached"].sum()),
                     "median": float(np.median(q)) if len(q) else math.inf})
    return pd.DataFrame(rows, columns=[*keys, "target", "n_seeds", "n_reached", "median"])


def zero_shot_summary(trials: pd.DataFrame) -> pd.DataFrame:
    """Zero-shot validation and test accuracy per data set and shots (mean, std over seeds)."""
    zs = usable_trials(trials)
    zs = zs[zs["method"] == ZERO_SHOT]
    return zs.groupby(["dataset", "shots"]).agg(
        n_seeds=("final_val_acc", "size"), val_mean=("final_val_acc", "mean"),
        val_std=("final_val_acc", "std"), test_mean=("final_test_acc", "mean"),
        test_std=("final_test_acc", "std")).reset_index()


def swept_params(trials: pd.DataFrame) -> list[str]:
    """Hyperparameters (without ``param_``) taking several values within some method."""
    tuned = tuned_trials(trials)
    out = []
    for col in param_column_names(tuned):
        counts = tuned.groupby("method")[col].nunique(dropna=True)
        if (counts > 1).any():
            out.append(col.removeprefix("param_"))
    return out
