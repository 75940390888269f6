"""A sweep's results as a Markdown summary and paper figures.

    python -m sweep.report results/default                 # writes results/default/report/
    python -m sweep.report results/default --out fig --target 0.7

Writes ``report.md`` (the sweep, its trials, and per data set and shot count
the best setting of each method at each budget level, validation and test
accuracy as mean ± std over seeds), ``accuracy_vs_queries.png``,
``queries_to_target.png`` and ``sensitivity.png`` (one per data set and shot
count when there are several).

The protocol is the honest one: a setting (a ``sample_id``: one
hyperparameter setting, its seeds being the rows that share it) is chosen by
its mean validation accuracy over seeds only; test accuracy is reported for
the chosen setting, never used to choose. At a budget level B a trial counts
with its last checkpoint that used at most B queries, in the trials'
``budget_unit``: the prompt it would have returned had it been given B.
Methods counted in different units are never compared: every table and
figure is grouped by (data set, shots, unit). Failed trials are listed and
otherwise left out; trials stopped early by the scheduler count with the
checkpoints they reached.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sweep.budget import UNITS
from sweep.results import ResultsError, load_results

__all__ = [
    "DEFAULT_FRACTIONS",
    "GROUP",
    "ReportError",
    "best_curves",
    "best_settings",
    "budget_levels",
    "checkpoint_table",
    "curve_band",
    "default_targets",
    "in_group",
    "main",
    "queries_to_target",
    "render_markdown",
    "swept_params",
    "target_summary",
    "write_report",
    "zero_shot_summary",
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


class ReportError(Exception):
    """The results cannot be reported on (no folder, no trials, no completed trial)."""


# ---------------------------------------------------------------- tables


def _usable(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials that did not fail, zero-shot included."""
    return trials[trials["status"] != "failed"]


def _tuned(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials that did not fail, of methods that have settings to choose (not zero-shot)."""
    usable = _usable(trials)
    return usable[usable["method"] != ZERO_SHOT]


def _param_columns(trials: pd.DataFrame) -> list[str]:
    return [c for c in trials.columns if c.startswith("param_")]


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _setting_params(trials: pd.DataFrame, sample_id: str) -> dict[str, Any]:
    """The non-null hyperparameters of a setting (its seeds share them)."""
    row = trials[trials["sample_id"] == sample_id].iloc[0]
    return {c.removeprefix("param_"): _plain(row[c]) for c in _param_columns(trials)
            if not pd.isna(row[c])}


def checkpoint_table(trials: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """The usable trials' checkpoints with their setting, group and queries in the trial's unit.

    Returns:
        One row per checkpoint with a measured validation accuracy: ``trial_id``,
        ``sample_id``, ``method``, ``seed``, ``black_box``, ``dataset``, ``shots``,
        ``unit``, ``checkpoint``, ``queries``, ``val_acc``, ``test_acc``; sorted by
        trial and checkpoint.
    """
    meta = _usable(trials)[["trial_id", "sample_id", "black_box", "dataset", "shots",
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
    tuned = _tuned(trials).rename(columns={"budget_unit": "unit"})
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
    cp = checkpoint_table(_tuned(trials), curves)
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
    cp = checkpoint_table(_tuned(trials), curves)
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
    zs = _usable(trials)
    zs = zs[zs["method"] == ZERO_SHOT]
    return zs.groupby(["dataset", "shots"]).agg(
        n_seeds=("final_val_acc", "size"), val_mean=("final_val_acc", "mean"),
        val_std=("final_val_acc", "std"), test_mean=("final_test_acc", "mean"),
        test_std=("final_test_acc", "std")).reset_index()


def swept_params(trials: pd.DataFrame) -> list[str]:
    """Hyperparameters (without ``param_``) taking several values within some method."""
    tuned = _tuned(trials)
    out = []
    for col in _param_columns(tuned):
        counts = tuned.groupby("method")[col].nunique(dropna=True)
        if (counts > 1).any():
            out.append(col.removeprefix("param_"))
    return out


# ---------------------------------------------------------------- Markdown


def _pct(mean: float, std: float) -> str:
    """``61.2 ± 1.3`` (percent); no ± for one seed, a dash for no value."""
    if pd.isna(mean):
        return "–"
    return f"{100 * mean:.1f}" if pd.isna(std) else f"{100 * mean:.1f} ± {100 * std:.1f}"


def _num(x: float) -> str:
    return "–" if pd.isna(x) else f"{int(round(x)):,}"


def _fraction(f: float) -> str:
    """1/8, 1/4, 1/2, 1: the budget levels as the fractions they were asked for."""
    frac = Fraction(f).limit_denominator(1000)
    return str(frac) if abs(float(frac) - f) < 1e-6 else f"{f:.3g}"


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{int(v)}" if v.is_integer() and abs(v) >= 1 else f"{v:.3g}"
    return str(v)


def _params_text(params: dict[str, Any], names: Sequence[str]) -> str:
    shown = [f"{k}={_value(params[k])}" for k in names if k in params]
    return ", ".join(shown) or "–"


def _method_label(method: str, black_box: bool) -> str:
    return method if black_box else f"{method} †"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> list[str]:
    # align: one character per column, "l" or "r".
    sep = ["---:" if a == "r" else "---" for a in align]
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |",
            *("| " + " | ".join(r) + " |" for r in rows)]


def _short(text: str, width: int = 140) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= width else text[:width - 1] + "…"


def _overview(sweep_dir: Path, trials: pd.DataFrame) -> list[str]:
    status = trials["status"].value_counts()
    black = trials.groupby("method")["black_box"].first()
    methods = [m for m in sorted(black.index) if m != ZERO_SHOT and black[m]]
    white = [m for m in sorted(black.index) if not black[m]]
    kinds = [f"{', '.join(methods)} (black-box)"] if methods else []
    kinds += [f"{', '.join(white)} (white-box, upper bound †)"] if white else []
    kinds += ["zero-shot"] if ZERO_SHOT in black.index else []
    data = [f"{d} ({', '.join(str(s) for s in sorted(g['shots'].unique()))} shots)"
            for d, g in trials.groupby("dataset", sort=True)]
    first = trials.iloc[0]
    lines = [
        f"# Sweep report: {first['sweep']}", "",
        f"- Results: `{sweep_dir}`",
        f"- Model: `{first['model']}`" + (f" ({', '.join(sorted(trials['model'].unique()))})"
                                           if trials["model"].nunique() > 1 else ""),
        f"- Data sets: {', '.join(data)}",
        f"- Seeds: {', '.join(str(s) for s in sorted(trials['seed'].unique()))}",
        f"- Methods: {'; '.join(kinds)}",
        f"- Trials: {len(trials)}: {status.get('completed', 0)} completed, "
        f"{status.get('stopped', 0)} stopped early by the scheduler, "
        f"{status.get('failed', 0)} failed",
        f"- Code: git `{first['git_rev']}`, promptsweep "
        f"{first['promptsweep_version'] or 'unknown'}",
    ]
    skipped = trials.attrs.get("skipped") or []
    if skipped:
        lines.append(f"- Skipped {len(skipped)} unreadable part files (incomplete trials; "
                     "`--resume` reruns them)")
    units = trials["budget_unit"].unique()
    if len(units) > 1:
        lines.append(f"- Budget units differ between methods ({', '.join(sorted(units))}): "
                     "methods are compared only within one unit; tables and figures are "
                     "grouped by unit.")
    lines += ["", "Protocol: a setting is one hyperparameter sample (`sample_id`) run with "
              "every seed. At each budget level B every trial counts with its last checkpoint "
              "that used at most B queries; each method's setting with the highest mean "
              "validation accuracy over seeds is chosen, and its validation and test accuracy "
              "are reported as mean ± std over seeds (ddof 1; no ± for one seed). Test accuracy "
              "is never used to choose. Failed trials are left out; trials stopped early count "
              "with the checkpoints they reached.", ""]
    lines += ["## Trials per method", ""]
    rows = []
    for m, g in trials.groupby("method", sort=True):
        st = g["status"].value_counts()
        budgets = sorted({(_num(b) if not pd.isna(b) else "unlimited") + " "
                          + UNIT_LABELS.get(u, u) for b, u in zip(g["budget"], g["budget_unit"])})
        if m == ZERO_SHOT:
            budgets = ["no queries"]
        rows.append([_method_label(m, bool(g["black_box"].iloc[0])), "; ".join(budgets),
                     str(g["sample_id"].nunique()), str(len(g)), str(st.get("completed", 0)),
                     str(st.get("stopped", 0)), str(st.get("failed", 0))])
    lines += _table(["method", "budget", "settings", "trials", "completed", "stopped",
                     "failed"], rows, "llrrrrr")
    failed = trials[trials["status"] == "failed"]
    if len(failed):
        lines += ["", "## Failed trials", ""]
        lines += _table(["trial", "method", "seed", "error"],
                        [[f"`{r.trial_id}`", r.method, str(r.seed), _short(r.error or "")]
                         for r in failed.itertuples()], "llrl")
    return lines


def _group_section(key: tuple, trials: pd.DataFrame, best: pd.DataFrame,
                   summary: pd.DataFrame, zero_shot: pd.DataFrame) -> list[str]:
    dataset, shots, unit = key
    lines = ["", f"## {dataset}, {shots} shots (queries in {UNIT_LABELS.get(unit, unit)})", ""]
    zs = zero_shot[(zero_shot["dataset"] == dataset) & (zero_shot["shots"] == shots)]
    if len(zs):
        z = zs.iloc[0]
        lines += ["Zero-shot (hand-written template, no queries): validation "
                  f"{_pct(z['val_mean'], z['val_std'])}%, test "
                  f"{_pct(z['test_mean'], z['test_std'])}% ({z['n_seeds']} seeds).", ""]
    sel = in_group(best, key)
    tuned = _tuned(trials)
    tuned = tuned[(tuned["dataset"] == dataset) & (tuned["shots"] == shots)
                  & (tuned["budget_unit"] == unit)]
    rows, fixed = [], []
    for method, g in sel.groupby("method", sort=True):
        mt = tuned[tuned["method"] == method]
        varied = [c.removeprefix("param_") for c in _param_columns(mt) if mt[c].nunique() > 1]
        const = {c.removeprefix("param_"): _plain(mt[c].dropna().iloc[0])
                 for c in _param_columns(mt) if mt[c].nunique() == 1}
        if const:
            fixed.append(f"{method}: {_params_text(const, sorted(const))}")
        for r in g.itertuples():
            rows.append([_method_label(method, r.black_box),
                         f"{r.budget:,} ({_fraction(r.fraction)})", _num(r.queries),
                         _pct(r.val_mean, r.val_std), _pct(r.test_mean, r.test_std),
                         str(r.n_seeds), str(r.n_settings),
                         f"`{r.sample_id}`" if r.sample_id else "–",
                         _params_text(r.params, varied)])
    lines += _table(["method", "budget (fraction)", "used", "val acc %", "test acc %", "seeds",
                     "settings", "best setting", "swept hyperparameters"], rows, "lrrrrrrll")
    lines += ["", "Used: mean queries at the checkpoints counted (less than the level when the "
              "method's own budget is smaller or it stopped). Settings: settings compared."]
    lines += [""]
    if fixed:
        lines += ["Fixed hyperparameters: " + "; ".join(fixed) + ".", ""]
    if (~sel["black_box"]).any():
        lines += ["† white-box (true gradients): an upper bound, not a black-box competitor.", ""]
    ts = in_group(summary, key)
    if len(ts):
        goal = ts["target"].iloc[0]
        lines += [f"Queries to reach {100 * goal:.1f}% validation accuracy (best full-budget "
                  "setting; median over seeds, a seed that never reaches it counts as infinite):",
                  ""]
        lines += _table(["method", "seeds reached", "median queries"],
                        [[_method_label(r.method, r.black_box), f"{r.n_reached}/{r.n_seeds}",
                          "not reached" if math.isinf(r.median) else _num(r.median)]
                         for r in ts.itertuples()], "lrr")
    return lines


def render_markdown(sweep_dir: Path, trials: pd.DataFrame, best: pd.DataFrame,
                    qt: pd.DataFrame, figures: Sequence[tuple[str, str]],
                    target: float | None = None) -> str:
    """The Markdown report: overview, failed trials, a section per group, the figures."""
    lines = _overview(sweep_dir, trials)
    summary = target_summary(qt)
    if len(summary):
        bb = qt.groupby([*GROUP, "method"])["black_box"].first().reset_index()
        summary = summary.merge(bb, on=[*GROUP, "method"])
    zero_shot = zero_shot_summary(trials)
    keys = sorted(best.groupby(GROUP).groups)
    for key in keys:
        lines += _group_section(key, trials, best, summary, zero_shot)
    for z in zero_shot.itertuples():  # data sets where only zero-shot ran
        if not any(k[:2] == (z.dataset, z.shots) for k in keys):
            lines += ["", f"## {z.dataset}, {z.shots} shots", "",
                      f"Zero-shot only: validation {_pct(z.val_mean, z.val_std)}%, test "
                      f"{_pct(z.test_mean, z.test_std)}% ({z.n_seeds} seeds)."]
    lines += ["", "## Figures", ""]
    if len(qt):
        how = (f"{100 * target:.1f}% (given)" if target is not None else
               f"{TARGET_FRACTION:.0%} of the best black-box final validation accuracy per group")
        lines += [f"Queries-to-target uses a validation target of {how}.", ""]
    lines += [f"- `{name}`: {caption}" for name, caption in figures] or [
        "None: no method with settings to tune completed a checkpoint."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the report


def write_report(sweep_dir: Path | str, out_dir: Path | str | None = None,
                 target: float | None = None) -> Path:
    """Write ``report.md`` and the figures of the sweep in ``sweep_dir``.

    Args:
        sweep_dir: a sweep's results folder (``results/<sweep>``).
        out_dir: where to write (default ``sweep_dir/report``; created).
        target: validation accuracy for queries-to-target (None: per group,
            ``TARGET_FRACTION`` of the best black-box final validation accuracy).

    Returns:
        The path of ``report.md``.

    Raises:
        ReportError: the folder is missing or not a sweep's, holds no trials,
            or no trial completed; ``target`` is not in (0, 1].
    """
    from sweep import report_plots  # matplotlib only when writing figures

    if target is not None and not 0 < target <= 1:
        raise ReportError(f"--target must be a validation accuracy in (0, 1], e.g. 0.7; "
                          f"got {target}")
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise ReportError(f"{sweep_dir}: no such results folder")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            trials, curves = load_results(sweep_dir)
        except ResultsError as exc:
            raise ReportError(str(exc)) from None
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if trials.empty:
        raise ReportError(f"{sweep_dir}: no trials in the results folder")
    if _usable(trials).empty:
        errors = trials["error"].dropna().unique()
        raise ReportError(f"{sweep_dir}: no completed trials ({len(trials)} failed"
                          f"{': ' + str(errors[0]) if len(errors) else ''})")
    out = Path(out_dir) if out_dir is not None else sweep_dir / "report"
    out.mkdir(parents=True, exist_ok=True)

    best = best_settings(trials, curves)
    qt = queries_to_target(trials, curves, target, best)
    figures = report_plots.write_figures(trials, curves, best, qt, out)
    path = out / "report.md"
    path.write_text(render_markdown(sweep_dir, trials, best, qt, figures, target),
                    encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (2: nothing to report on)."""
    parser = argparse.ArgumentParser(prog="python -m sweep.report",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", type=Path, help="a sweep's results folder")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: RESULTS_DIR/report)")
    parser.add_argument("--target", type=float, default=None,
                        help="validation accuracy (a fraction) for queries-to-target (default: "
                             f"{TARGET_FRACTION:g} x the best black-box final validation "
                             "accuracy of each data set, shots and unit)")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.results_dir, args.out, args.target)
    except (ReportError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
