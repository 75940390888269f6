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

A trial's ``budget_run`` (absent in older results; null reads as
``"curve"``) says how its budget levels are read: ``"curve"``, off its one
curve, as above; ``"per-budget"``, the trial was planned for its own
``budget`` alone (one of several limits, each setting run once per limit).
A method with per-budget trials in a group has the distinct budgets of
those trials as its levels, and its value at a level comes from the trials
run for that budget (its curve trials, if any, are left out); curve methods
of the group are read at those budgets too.
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
    "DEFAULT_FRACTIONS", "GROUP", "PER_BUDGET", "TARGET_FRACTION", "UNIT_LABELS", "ZERO_SHOT",
    "best_curves", "best_settings", "budget_levels", "checkpoint_table", "curve_band",
    "default_targets", "full_budget_runs", "in_group", "level_values", "param_column_names",
    "per_budget_mask", "plain_value", "queries_to_target", "swept_params", "target_summary",
    "tuned_trials", "usable_trials", "zero_shot_summary",
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
#: ``budget_run`` of a trial planned for its own budget alone (module docstring).
PER_BUDGET = "per-budget"
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


def per_budget_mask(trials: pd.DataFrame) -> np.ndarray:
    """Which trials were run for their own budget alone (``budget_run == "per-budget"``).

    Results without the column, a null, and a trial without a budget read as ``"curve"``.
    """
    if "budget_run" not in trials.columns:
        return np.zeros(len(trials), dtype=bool)
    return ((trials["budget_run"] == PER_BUDGET).to_numpy(dtype=bool)
            & trials["budget"].notna().to_numpy(dtype=bool))


def full_budget_runs(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials at their method's full budget: per-budget runs of a smaller level left out, so
    that a figure over settings (sensitivity) never mixes budgets."""
    per = per_budget_mask(trials)
    if not per.any():
        return trials
    top = trials.groupby(["method", "dataset", "shots", "budget_unit"])["budget"].transform("max")
    return trials[~per | (trials["budget"] == top).to_numpy(dtype=bool)]


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
        ``unit``, ``checkpoint``, ``queries``, ``val_acc``, ``test_acc``, ``val_loss``
        (NaN where not measured: results before schema version 5),
        ``trial_budget`` (the trial's ``budget``) and ``per_budget``
        (:func:`per_budget_mask`); sorted by trial and checkpoint.
    """
    usable = usable_trials(trials)
    meta = usable[["trial_id", "sample_id", "black_box", "dataset", "shots", "budget_unit",
                   "budget"]].rename(columns={"budget_unit": "unit", "budget": "trial_budget"})
    meta["per_budget"] = per_budget_mask(usable)
    cp = curves.merge(meta, on="trial_id", how="inner")
    cp["per_budget"] = cp["per_budget"].astype(bool)
    queries = np.full(len(cp), np.nan)
    for unit in UNITS:
        mask = (cp["unit"] == unit).to_numpy()
        queries[mask] = cp.loc[mask, f"queries_{unit}"].to_numpy(dtype=float)
    cp["queries"] = queries
    if "val_loss" not in cp:
        cp["val_loss"] = np.nan
    cp = cp[cp["val_acc"].notna()]
    cols = ["trial_id", "sample_id", "method", "seed", "black_box", *GROUP, "checkpoint",
            "queries", "val_acc", "test_acc", "val_loss", "trial_budget", "per_budget"]
    return cp[cols].sort_values(["trial_id", "checkpoint"]).reset_index(drop=True)


def _group_levels(trials: pd.DataFrame, fractions: Sequence[float],
                  by: Sequence[str] = GROUP) -> dict[tuple, dict[int, float]]:
    """Per group (``by``: or per group and method): each budget level -> its nominal
    fraction of the group's budget.

    Levels read off the curves are ``fractions`` of the largest budget of the
    group's trials (a trial without a budget counts with the queries it used),
    nominally the fraction asked for (a larger fraction wins a level two share);
    the budgets of per-budget trials are levels too, nominally budget / largest.
    """
    tuned = tuned_trials(trials).rename(columns={"budget_unit": "unit"})
    per = per_budget_mask(tuned)
    out: dict[tuple, dict[int, float]] = {}
    for key, idx in tuned.groupby(list(by), sort=True).indices.items():
        g = tuned.iloc[idx]
        used = g.apply(lambda r: r[f"queries_{r['unit']}"], axis=1).astype(float)
        full = float(g["budget"].astype(float).fillna(used).max())
        levels = {max(1, math.ceil(f * full - _EPS)): float(f) for f in sorted(fractions)}
        for budget in g.loc[per[idx], "budget"]:
            # A level of ``[budget] limits`` is a rounded share of its budget (2,409 of
            # 9,638 for 1/4): nominally the fraction it stands for, where one is that near.
            share = int(budget) / full
            near = min(fractions, key=lambda f: abs(f - share))
            levels.setdefault(int(budget), float(near) if abs(near - share) <= 0.01 * near
                              else share)
        out[key] = dict(sorted(levels.items()))
    return out


def budget_levels(trials: pd.DataFrame,
                  fractions: Sequence[float] = DEFAULT_FRACTIONS) -> dict[tuple, list[int]]:
    """Budget levels per group: ``fractions`` of the largest budget of the group's trials.

    A trial without a budget (unlimited) counts with the queries it used. The
    budgets of per-budget trials (module docstring) are levels of the group too.
    """
    return {key: list(levels) for key, levels in _group_levels(trials, fractions).items()}


def in_group(df: pd.DataFrame, key: tuple) -> pd.DataFrame:
    """The rows of ``df`` (with the ``GROUP`` columns) in the group ``key``."""
    mask = np.ones(len(df), dtype=bool)
    for col, value in zip(GROUP, key):
        mask &= (df[col] == value).to_numpy()
    return df[mask]


_LEVEL_COLUMNS = [*GROUP, "method", "black_box", "per_budget", "fraction", "level_fraction",
                  "budget"]
_SEED_COLUMNS = ["trial_id", "sample_id", "seed", "queries", "val_acc", "test_acc", "val_loss"]


def _counted_checkpoints(trials: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """The tuned trials' checkpoints that count: a method's curve trials do not count
    beside its per-budget ones (module docstring)."""
    cp = checkpoint_table(tuned_trials(trials), curves)
    has_per = cp.groupby([*GROUP, "method"])["per_budget"].transform("any").to_numpy(dtype=bool)
    return cp[~has_per | cp["per_budget"].to_numpy(dtype=bool)]


def _method_levels(cp: pd.DataFrame, trials: pd.DataFrame,
                   fractions: Sequence[float]) -> pd.DataFrame:
    """Every method's budget levels per group: ``_LEVEL_COLUMNS`` and ``run``, the trial
    budget a level is read from (NaN: any trial of the method, off its curve).

    The levels are ``fractions`` of the method's own budget: methods of one group may
    have budgets of their own (their published ones), and each is compared at the same
    share of its own."""
    levels_of = _group_levels(trials, fractions, by=[*GROUP, "method"])
    rows = []
    for (*key, method), mcp in cp.groupby([*GROUP, "method"], sort=True):
        levels = levels_of[(*key, method)]
        top = max(levels)
        base = dict(zip(GROUP, key), method=method, black_box=bool(mcp["black_box"].iloc[0]))
        if not mcp["per_budget"].any():
            rows += [dict(base, per_budget=False, fraction=level / top, level_fraction=nominal,
                          budget=level, run=math.nan) for level, nominal in levels.items()]
            continue
        own = sorted({int(b) for b in mcp["trial_budget"]})
        # Above its largest budget (another method's is larger) a method counts with the
        # runs for its largest, as a curve method with a smaller budget does.
        for level in own + ([top] if top > own[-1] else []):
            rows.append(dict(base, per_budget=True, fraction=level / top,
                             level_fraction=levels[level], budget=level,
                             run=level if level in own else own[-1]))
    return pd.DataFrame(rows, columns=[*_LEVEL_COLUMNS, "run"])


def _at_levels(trials: pd.DataFrame, curves: pd.DataFrame,
               fractions: Sequence[float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(every method's levels, each counted trial's last checkpoint within each level)."""
    cp = _counted_checkpoints(trials, curves)
    levels = _method_levels(cp, trials, fractions)
    m = cp.drop(columns=["black_box", "per_budget"]).merge(levels, on=[*GROUP, "method"])
    m = m[(m["queries"] <= m["budget"]) & (m["run"].isna() | (m["trial_budget"] == m["run"]))]
    m = m.sort_values(["trial_id", "budget", "checkpoint"])
    at = m.groupby(["trial_id", "budget"], sort=False).tail(1)
    at = at.sort_values([*GROUP, "method", "budget", "trial_id"]).reset_index(drop=True)
    return levels, at[[*_LEVEL_COLUMNS, *_SEED_COLUMNS]]


def level_values(trials: pd.DataFrame, curves: pd.DataFrame,
                 fractions: Sequence[float] = DEFAULT_FRACTIONS) -> pd.DataFrame:
    """Each usable trial's checkpoint at each budget level of its method (what
    :func:`best_settings` chooses from; per seed, what the frontier's bands span).

    At a level a trial counts with its last checkpoint within it; a method's
    per-budget trials only at the level they were run for.

    Returns:
        One row per group, method, level and trial with a checkpoint within the
        level: the columns of :func:`best_settings` up to ``budget``, then
        ``trial_id``, ``sample_id``, ``seed``, ``queries``, ``val_acc``, ``test_acc``.
    """
    return _at_levels(trials, curves, fractions)[1]


def best_settings(trials: pd.DataFrame, curves: pd.DataFrame,
                  fractions: Sequence[float] = DEFAULT_FRACTIONS,
                  metric: str = "val_acc") -> pd.DataFrame:
    """The best setting of each method at each budget level, chosen on validation.

    Args:
        trials: the trials table (failed trials and zero-shot are left out here).
        curves: the curves table.
        fractions: budget levels as fractions of each group's budget.
        metric: what chooses: the highest mean validation accuracy over seeds
            (``val_acc``) or the lowest mean validation loss (``val_loss``), the sweep's
            ``[search] metric`` (``sweep.json``).

    Returns:
        One row per group (``dataset``, ``shots``, ``unit``), method and budget
        level: ``method``, ``black_box``, ``per_budget`` (the levels are the
        method's per-budget runs), ``fraction`` (the level over the group's
        largest), ``level_fraction`` (nominally: the fraction asked for, for a
        level read off the curves), ``budget`` (the level),
        ``sample_id`` of the setting chosen by ``metric`` at the level, ``n_seeds``,
        ``val_mean``, ``val_std``, ``val_loss_mean``,
        ``test_mean``, ``test_std`` (std over seeds, ddof 1: NaN for one seed),
        ``queries`` (mean queries at the checkpoints used), ``n_settings``
        (settings compared) and ``params`` (the setting's hyperparameters).
        A method with no checkpoint within a level has NaN metrics there.
    """
    levels, at = _at_levels(trials, curves, fractions)
    level_keys = [*GROUP, "method", "budget"]
    per = at.groupby([*level_keys, "sample_id"], sort=False).agg(
        n_seeds=("val_acc", "size"), val_mean=("val_acc", "mean"), val_std=("val_acc", "std"),
        val_loss_mean=("val_loss", "mean"), test_mean=("test_acc", "mean"),
        test_std=("test_acc", "std"), queries=("queries", "mean")).reset_index()
    # Ties go to the setting with more seeds behind its mean, then to the first id:
    # deterministic, and test accuracy never breaks a tie. A setting whose loss was not
    # measured (NaN) comes last.
    by, lowest = {"val_acc": ("val_mean", False), "val_loss": ("val_loss_mean", True)}[metric]
    per = per.sort_values([*level_keys, by, "n_seeds", "sample_id"],
                          ascending=[True] * len(level_keys) + [lowest, False, True],
                          na_position="last")
    counts = per.groupby(level_keys).size().rename("n_settings").reset_index()
    chosen = per.groupby(level_keys, sort=False).head(1)
    out = levels.drop(columns="run").merge(chosen, on=level_keys, how="left").merge(
        counts, on=level_keys, how="left")
    params = {sid: _setting_params(trials, sid) for sid in out["sample_id"].dropna().unique()}
    out["params"] = [params.get(sid, {}) if isinstance(sid, str) else {}
                     for sid in out["sample_id"]]
    out["sample_id"] = out["sample_id"].astype(object).where(out["sample_id"].notna(), None)
    out["n_seeds"] = out["n_seeds"].fillna(0).astype(int)
    out["n_settings"] = out["n_settings"].fillna(0).astype(int)
    cols = [*_LEVEL_COLUMNS, "sample_id", "n_seeds", "val_mean", "val_std", "val_loss_mean",
            "test_mean", "test_std", "queries", "n_settings", "params"]
    return out[cols]


def _full(best: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``best`` at the full budget of each group, with a setting."""
    return best[np.isclose(best["fraction"], 1.0) & best["sample_id"].notna()]


def best_curves(trials: pd.DataFrame, curves: pd.DataFrame,
                best: pd.DataFrame | None = None) -> pd.DataFrame:
    """The checkpoints of every seed of each method's best setting at the full budget.

    A setting run once per budget counts with its runs for its largest budget.
    """
    best = best_settings(trials, curves) if best is None else best
    cp = _counted_checkpoints(trials, curves)
    keys = [*GROUP, "method", "sample_id"]
    out = cp.merge(_full(best)[keys], on=keys, how="inner")
    largest = out.groupby(keys)["trial_budget"].transform("max")
    keep = ~out["per_budget"].to_numpy(dtype=bool) | (out["trial_budget"] == largest).to_numpy()
    return out[keep].reset_index(drop=True)


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
