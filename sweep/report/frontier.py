"""The budget frontier: each method's best validated accuracy against the budget (``frontier.png``).

At each budget level (``best_settings``) a method counts with its setting
chosen on validation at that level; the figure draws that setting's test
accuracy, mean over seeds, one panel per data set (and shot count and unit)
and one for the average over the data sets, with a band over seeds: min-max,
or with ``BOOTSTRAP_SEEDS`` seeds or more a bootstrap 95% interval of the
mean (seeded: the same results give the same band). The average panel
averages, per seed, a method's accuracies over the data sets (only a method
with every data set at the level), and its band spans those per-seed
averages. Zero-shot is a horizontal line. ``frontier.csv`` holds every
number drawn (:func:`frontier_table`), validation accuracy besides.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import PercentFormatter

from sweep.report.figures import (
    COLUMN_IN,
    RC,
    UNIT_LABELS,
    _legend,
    _log_ticks,
    _method_handles,
    _save,
    _tick_text,
    plt,
)
from sweep.report.tables import (
    DEFAULT_FRACTIONS,
    GROUP,
    ZERO_SHOT,
    level_values,
    zero_shot_summary,
)

__all__ = ["BOOTSTRAP_SEEDS", "FRONTIER_COLUMNS", "frontier_table", "plot_frontier", "seed_band"]

#: From this many seeds on, the band is a bootstrap 95% interval of the mean, not min-max.
BOOTSTRAP_SEEDS = 5
BOOTSTRAP_RESAMPLES = 2000
MIN_MAX, BOOTSTRAP = "min-max", "bootstrap 95%"
# Budget levels labelled one by one on an axis up to this many (7 pt, one panel column).
_TICKS = 6
#: The panel of the average over the data sets.
AVERAGE = "average"
FRONTIER_COLUMNS = ["shots", "unit", "panel", "method", "black_box", "level_fraction", "budget",
                    "x", "x_axis", "n_seeds", "val_mean", "test_mean", "test_lo", "test_hi",
                    "band", "sample_id"]


def seed_band(values: Sequence[float] | np.ndarray, seed: int = 0) -> tuple[float, float, str]:
    """The band over seeds of a mean: (low, high, kind).

    Fewer than ``BOOTSTRAP_SEEDS`` values: their min and max ("min-max"); more:
    the 2.5 and 97.5 percentiles of the means of ``BOOTSTRAP_RESAMPLES``
    resamples with replacement ("bootstrap 95%"), drawn from a generator seeded
    with ``seed``. NaNs are left out; no value gives NaNs.
    """
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return math.nan, math.nan, MIN_MAX
    if len(v) < BOOTSTRAP_SEEDS:
        return float(v.min()), float(v.max()), MIN_MAX
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(BOOTSTRAP_RESAMPLES, len(v)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi), BOOTSTRAP


def frontier_table(trials: pd.DataFrame, curves: pd.DataFrame, best: pd.DataFrame,
                   fractions: Sequence[float] = DEFAULT_FRACTIONS) -> pd.DataFrame:
    """The numbers of the frontier figure (also ``frontier.csv``).

    Args:
        trials, curves: the tables.
        best: :func:`~sweep.report.tables.best_settings` of the tables, with ``fractions``.

    Returns:
        ``FRONTIER_COLUMNS``: one row per panel (``panel``: a data set, or
        ``"average"``), method and budget level: the level in queries
        (``budget``; NaN on the average panel when the data sets' budgets
        differ), ``x`` (what is drawn: the budget, or there ``level_fraction``;
        ``x_axis`` says which), ``n_seeds``, ``val_mean``, ``test_mean``, the
        band ``test_lo``..``test_hi`` and its kind, and the chosen ``sample_id``;
        zero-shot rows have no level (its line).
    """
    chosen = best[best["sample_id"].notna()]
    keys = [*GROUP, "method", "budget", "sample_id"]
    seeds = level_values(trials, curves, fractions).merge(chosen[keys], on=keys, how="inner")
    by_key = dict(iter(seeds.groupby(keys[:-1], sort=False)))
    zs = zero_shot_summary(trials).set_index(["dataset", "shots"])
    rows: list[dict[str, Any]] = []
    for (shots, unit), g in chosen.groupby(["shots", "unit"], sort=True):
        for r in g.itertuples():
            s = by_key.get((r.dataset, r.shots, r.unit, r.method, r.budget))
            lo, hi, band = seed_band(s["test_acc"] if s is not None else [])
            rows.append(dict(shots=shots, unit=unit, panel=r.dataset, method=r.method,
                             black_box=r.black_box, level_fraction=r.level_fraction,
                             budget=r.budget, x=float(r.budget), x_axis="queries",
                             n_seeds=r.n_seeds, val_mean=r.val_mean, test_mean=r.test_mean,
                             test_lo=lo, test_hi=hi, band=band, sample_id=r.sample_id))
        datasets = sorted(g["dataset"].unique())
        for d in datasets:
            if (d, shots) in zs.index:
                z = zs.loc[(d, shots)]
                rows.append(dict(shots=shots, unit=unit, panel=d, method=ZERO_SHOT,
                                 n_seeds=z["n_seeds"], val_mean=z["val_mean"],
                                 test_mean=z["test_mean"]))
        if len(datasets) > 1:
            rows += _average_rows(g, seeds, zs, datasets)
    return pd.DataFrame(rows, columns=FRONTIER_COLUMNS)


def _average_rows(g: pd.DataFrame, seeds: pd.DataFrame, zs: pd.DataFrame,
                  datasets: list[str]) -> list[dict[str, Any]]:
    """The average panel of one shot count and unit (``g``: its chosen settings)."""
    shots, unit = g["shots"].iloc[0], g["unit"].iloc[0]
    complete = [(k, m) for k, m in g.groupby(["method", "level_fraction"], sort=True)
                if sorted(m["dataset"]) == datasets]
    # Budgets in queries where every data set has the same; fractions of each one's otherwise.
    queries = all(m["budget"].nunique() == 1 for _, m in complete)
    rows = []
    for (method, level), m in complete:
        s = seeds[(seeds["shots"] == shots) & (seeds["unit"] == unit)
                  & (seeds["method"] == method) & (seeds["level_fraction"] == level)]
        per_seed = s.pivot_table(index="seed", columns="dataset", values="test_acc",
                                 aggfunc="mean").dropna()
        lo, hi, band = seed_band(per_seed.mean(axis=1) if per_seed.shape[1] == len(datasets)
                                 else [])
        budget = float(m["budget"].iloc[0]) if m["budget"].nunique() == 1 else math.nan
        rows.append(dict(shots=shots, unit=unit, panel=AVERAGE, method=method,
                         black_box=bool(m["black_box"].iloc[0]), level_fraction=level,
                         budget=budget, x=budget if queries else level,
                         x_axis="queries" if queries else "fraction",
                         n_seeds=len(per_seed), val_mean=m["val_mean"].mean(),
                         test_mean=m["test_mean"].mean(), test_lo=lo, test_hi=hi, band=band))
    if all((d, shots) in zs.index for d in datasets):
        z = zs.loc[[(d, shots) for d in datasets]]
        rows.append(dict(shots=shots, unit=unit, panel=AVERAGE, method=ZERO_SHOT,
                         n_seeds=int(z["n_seeds"].min()), val_mean=z["val_mean"].mean(),
                         test_mean=z["test_mean"].mean()))
    return rows


def _fraction_text(f: float) -> str:
    frac = Fraction(f).limit_denominator(1000)
    return str(frac) if abs(float(frac) - f) < 1e-6 else f"{f:.2g}"


def _band_label(kinds: set[str]) -> str:
    if kinds == {BOOTSTRAP}:
        return "bootstrap 95% interval of the mean over seeds"
    if BOOTSTRAP in kinds:
        return f"min–max over seeds (bootstrap 95% with {BOOTSTRAP_SEEDS}+ seeds)"
    return "min–max over seeds"


def plot_frontier(frontier: pd.DataFrame, styles: dict[str, dict], path: Path) -> str:
    """Test accuracy at each budget level of the setting chosen there, a panel per data set.

    Returns:
        The figure's caption.
    """
    tuned = frontier[frontier["method"] != ZERO_SHOT]
    panels = []
    for (shots, unit), g in tuned.groupby(["shots", "unit"], sort=True):
        names = sorted(set(g["panel"]) - {AVERAGE})
        panels += [(shots, unit, p) for p in names + ([AVERAGE] if AVERAGE in set(g["panel"])
                                                      else [])]
    several_units = tuned.groupby(["shots", "panel"])["unit"].nunique().max() > 1
    cols = min(len(panels), 2)
    rows = math.ceil(len(panels) / cols)
    with plt.rc_context(RC):
        fig, axes = plt.subplots(rows, cols, squeeze=False,
                                 figsize=(COLUMN_IN * cols, 0.5 + 2.0 * rows))
        for ax in axes.flat[len(panels):]:
            ax.axis("off")
        for j, (shots, unit, panel) in enumerate(panels):
            ax = axes.flat[j]
            sel = frontier[(frontier["shots"] == shots) & (frontier["unit"] == unit)
                           & (frontier["panel"] == panel)]
            lines = sel[sel["method"] != ZERO_SHOT]
            for method in [m for m in styles if m in set(lines["method"])]:
                st, m = styles[method], lines[lines["method"] == method].sort_values("x")
                ax.fill_between(m["x"], m["test_lo"], m["test_hi"], color=st["color"],
                                alpha=0.18, linewidth=0)
                ax.plot(m["x"], m["test_mean"], color=st["color"], marker=st["marker"],
                        linestyle=st["linestyle"], markeredgewidth=0)
            for z in sel.loc[sel["method"] == ZERO_SHOT, "test_mean"]:
                ax.axhline(z, color="0.45", linestyle=":", linewidth=1.0)
            ax.set_xscale("log")
            x = lines["x"].to_numpy(float)
            by_fraction = bool((lines["x_axis"] == "fraction").any())
            ticks = sorted(set(x))
            if by_fraction or len(ticks) <= _TICKS:  # the levels themselves, when they fit
                ax.set_xticks(ticks, [_fraction_text(t) if by_fraction else _tick_text(t)
                                      for t in ticks])
                ax.minorticks_off()
            else:
                _log_ticks(ax, ticks[0], ticks[-1], COLUMN_IN - 0.6)
            ax.set_xlabel("Budget (fraction of each data set's)" if by_fraction
                          else f"Budget ({UNIT_LABELS.get(unit, unit)})")
            if x.min() == x.max():
                ax.set_xlim(x.min() / 2, x.max() * 2)
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            ax.grid(True, which="major")
            if j % cols == 0:
                ax.set_ylabel("Test accuracy")
            n = len(set(tuned.loc[(tuned["shots"] == shots) & (tuned["unit"] == unit), "panel"])
                    - {AVERAGE})
            title = (f"average over {n} data sets" if panel == AVERAGE else panel)
            title += f", {shots} shots" + (f" ({UNIT_LABELS.get(unit, unit)})" if several_units
                                          else "")
            ax.set_title(title)
        handles: list[Any] = _method_handles(styles, set(tuned["method"]))
        if (frontier["method"] == ZERO_SHOT).any():
            handles.append(Line2D([], [], color="0.45", linestyle=":", label="zero-shot"))
        band = _band_label(set(tuned["band"].dropna()))
        handles.append(Patch(color="0.6", alpha=0.35, linewidth=0, label=band))
        _legend(fig, handles, 3)
        _save(fig, path)
    return ("test accuracy against the budget of each method's setting chosen on validation at "
            "each budget level (line: mean over seeds; shaded: " + band + "), a panel per data "
            "set and the average over the data sets (a method with every data set; its band "
            "over the seeds' averages); dotted: zero-shot; dashed: white-box upper bound; log x "
            "axis.")
