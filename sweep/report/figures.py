"""The figures of ``python -m sweep.report``: matplotlib (Agg), sized for a paper's column.

Every figure is drawn at its printed size (3.4 in per panel column, the width
of one column of a two-column paper) with 7-8 pt text, so nothing is scaled
down when it is placed, and saved at 300 dpi. A method keeps its colour and
marker in every figure (Okabe-Ito colours, distinguishable with colour-vision
deficiencies; markers for greyscale print); white-box methods are dashed.
Beside each PNG, a CSV of the same name holds the numbers it draws.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: never a display, also on a cluster's head node

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import (  # noqa: E402
    FixedLocator,
    FuncFormatter,
    LogLocator,
    NullFormatter,
    PercentFormatter,
)

from sweep.report.figure_data import (  # noqa: E402
    accuracy_vs_queries_data,
    queries_to_target_data,
    sensitivity_data,
    write_csv,
)
from sweep.report.tables import (  # noqa: E402
    GROUP,
    UNIT_LABELS,
    ZERO_SHOT,
    best_curves,
    curve_band,
    full_budget_runs,
    in_group,
    swept_params,
    zero_shot_summary,
)
from sweep.spec import DEFAULT_SPACES  # noqa: E402

__all__ = ["method_styles", "plot_accuracy_vs_queries", "plot_queries_to_target",
           "plot_sensitivity", "write_figures"]

#: Okabe-Ito without its yellow (too pale on white), then further distinct colours.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
           "#882255", "#999933", "#44AA99")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
#: One panel column: the width of one column of a two-column paper, in inches.
COLUMN_IN = 3.4
RC: dict[str, Any] = {
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7,
    "ytick.labelsize": 7, "legend.fontsize": 7, "axes.linewidth": 0.6,
    "axes.spines.top": False, "axes.spines.right": False, "lines.linewidth": 1.2,
    "lines.markersize": 3.5, "xtick.major.width": 0.6, "ytick.major.width": 0.6,
    "xtick.minor.width": 0.4, "ytick.minor.width": 0.4, "grid.linewidth": 0.4,
    "grid.alpha": 0.35, "legend.frameon": False, "savefig.dpi": 300,
    "savefig.bbox": "tight", "savefig.pad_inches": 0.02, "figure.constrained_layout.use": True,
}
# A parameter the default search spaces do not know gets a log axis when positive and
# spanning more than this ratio, and categories when it is an integer with few values.
_LOG_RATIO = 20.0
_FEW = 6


@functools.lru_cache(maxsize=1)
def _space_kinds() -> dict[str, tuple[bool, bool]]:
    """Parameter name -> (categorical, log) in the default search spaces (``sweep.spec``).

    The tables store values, not how they were drawn: a subspace dimension drawn
    from a few choices reads best as categories, a learning rate drawn on a log
    scale on a log axis.
    """
    kinds: dict[str, tuple[bool, bool]] = {}
    for params in DEFAULT_SPACES.values():
        for p in params:
            cat, log = kinds.get(p.name, (False, False))
            kinds[p.name] = (cat or p.kind == "categorical", log or p.log)
    return kinds


def method_styles(methods: Sequence[str], black_box: dict[str, bool]) -> dict[str, dict]:
    """Colour, marker and line style per method: black-box first, by name, then white-box."""
    order = sorted((m for m in methods if m != ZERO_SHOT), key=lambda m: (not black_box[m], m))
    return {m: {"color": PALETTE[i % len(PALETTE)], "marker": MARKERS[i % len(MARKERS)],
                "linestyle": "-" if black_box[m] else "--",
                "label": m if black_box[m] else f"{m} (white-box)"}
            for i, m in enumerate(order)}


def _title(key: tuple) -> str:
    dataset, shots, _ = key
    return f"{dataset}, {shots} shots"


def _queries_label(unit: str) -> str:
    return f"Queries ({UNIT_LABELS.get(unit, unit)})"


def _save(fig: plt.Figure, path: Path) -> None:
    # An 8-bit palette would band the shaded areas; plain RGBA PNG at 300 dpi of a
    # small figure stays ~100 kB.
    fig.savefig(path, dpi=300)
    plt.close(fig)


#: Groups per row of a figure: two panel columns fill a two-column paper's text width.
_GRID_COLS = 2


def _grid(n: int, rows_per: int, height_in: float) -> tuple[plt.Figure, list[list[plt.Axes]]]:
    """A figure with ``n`` groups of ``rows_per`` stacked panels, two groups per row.

    Returns:
        The figure and, per group, its panels top to bottom; unused cells are hidden.
    """
    cols = min(n, _GRID_COLS)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows * rows_per, cols, squeeze=False,
                             figsize=(COLUMN_IN * cols, height_in * rows))
    cells = [[axes[(j // cols) * rows_per + i, j % cols] for i in range(rows_per)]
             for j in range(rows * cols)]
    for cell in cells[n:]:
        for ax in cell:
            ax.axis("off")
    return fig, cells[:n]


def _tick_text(v: float) -> str:
    """Short plain numbers: 20, 500, 2k, 50k, 0.002 (the axis label gives the unit)."""
    if v >= 1000:
        return f"{v / 1000:g}k"
    return f"{v:,.0f}" if v >= 1 else f"{v:g}"


def _log_ticks(ax: plt.Axes, lo: float, hi: float, width_in: float,
               extra: dict[float, str] | None = None) -> None:
    """Labelled x ticks of a log axis spanning lo..hi: as many 1-2-5 steps as fit.

    Matplotlib labels only powers of ten: over one or two decades that is one or
    two labels, and 10^3 reads worse than 1k for a query count. About 2.3 labels
    fit per inch of axis at 7 pt.
    """
    room = max(2, int(width_in * 2.3))
    k0, k1 = math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1
    ticks: list[float] = []
    for subs, step in (((1, 2, 5), 1), ((1, 3), 1), ((1,), 1), ((1,), 2), ((1,), 3)):
        ticks = [m * 10.0 ** k for k in range(k0, k1) if k % step == 0 for m in subs]
        ticks = [t for t in ticks if lo / 1.001 <= t <= hi * 1.001]
        if len(ticks) <= room:
            break
    labels = {t: _tick_text(t) for t in ticks} | (extra or {})
    ax.xaxis.set_major_locator(FixedLocator(sorted(labels)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: labels.get(v, "")))
    ax.xaxis.set_minor_locator(LogLocator(subs="auto"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _legend(fig: plt.Figure, handles: list, ncol: int) -> None:
    fig.legend(handles=handles, loc="outside lower center", ncol=max(1, min(ncol, len(handles))),
               handlelength=2.2, columnspacing=1.2)


def _method_handles(styles: dict[str, dict], present: Sequence[str]) -> list[Line2D]:
    return [Line2D([], [], color=s["color"], marker=s["marker"], linestyle=s["linestyle"],
                   label=s["label"]) for m, s in styles.items() if m in present]


# ---------------------------------------------------------------- accuracy vs queries


def plot_accuracy_vs_queries(trials: pd.DataFrame, curves: pd.DataFrame, best: pd.DataFrame,
                             styles: dict[str, dict], path: Path) -> str:
    """Test (top) and validation (bottom) accuracy of each method's best setting vs queries.

    Returns:
        The figure's caption.
    """
    seeds = best_curves(trials, curves, best)
    zs = zero_shot_summary(trials)
    keys = sorted(seeds.groupby(GROUP).groups)
    counts = set(seeds.groupby([*GROUP, "method"])["seed"].nunique())
    n_seeds = counts.pop() if len(counts) == 1 else None  # named only when all agree
    with plt.rc_context(RC):
        fig, cells = _grid(len(keys), 2, 4.3)
        for j, key in enumerate(keys):
            axes = cells[j]
            axes[1].sharex(axes[0])
            axes[1].sharey(axes[0])
            axes[0].tick_params(labelbottom=False)
            group = in_group(seeds, key)
            z = zs[(zs["dataset"] == key[0]) & (zs["shots"] == key[1])]
            for i, (metric, name) in enumerate((("test_acc", "Test"), ("val_acc", "Validation"))):
                ax = axes[i]
                for method, mc in group.groupby("method", sort=True):
                    st = styles[method]
                    band = curve_band(mc, metric)
                    ax.fill_between(band["queries"], band["lo"], band["hi"], color=st["color"],
                                    alpha=0.18, linewidth=0)
                    ax.plot(band["queries"], band["mean"], color=st["color"], marker=st["marker"],
                            linestyle=st["linestyle"], markeredgewidth=0)
                if len(z):
                    ax.axhline(z[f"{metric.split('_')[0]}_mean"].iloc[0], color="0.45",
                               linestyle=":", linewidth=1.0)
                ax.set_xscale("log")
                pos = group.loc[group["queries"] > 0, "queries"]
                if len(pos):
                    _log_ticks(ax, float(pos.min()), float(pos.max()), COLUMN_IN - 0.6)
                ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
                ax.grid(True, which="major")
                if j % _GRID_COLS == 0:
                    ax.set_ylabel(f"{name} accuracy")
                if i == 1:
                    ax.set_xlabel(_queries_label(key[2]))
                if i == 0 and len(keys) > 1:
                    ax.set_title(_title(key))
        handles: list[Any] = _method_handles(styles, seeds["method"].unique())
        if len(zs):
            handles.append(Line2D([], [], color="0.45", linestyle=":", label="zero-shot"))
        handles.append(Patch(color="0.6", alpha=0.35, linewidth=0,
                             label=f"min–max over {n_seeds} seeds" if n_seeds else
                             "min–max over seeds"))
        _legend(fig, handles, 3)
        _save(fig, path)
    return ("test (top) and validation (bottom) accuracy versus queries of each method's best "
            "setting, chosen by mean validation accuracy at the full budget; line: mean over "
            "seeds, shaded: min–max over seeds; dotted: zero-shot; dashed: white-box upper "
            "bound; log x axis.")


# ---------------------------------------------------------------- queries to target


def plot_queries_to_target(qt: pd.DataFrame, best: pd.DataFrame, styles: dict[str, dict],
                           path: Path) -> str:
    """Per method: each seed's queries to the target (points) and their median (bar)."""
    keys = sorted(qt.groupby(GROUP).groups)
    n_methods = max(qt.groupby(GROUP)["method"].nunique())
    with plt.rc_context(RC):
        fig, cells = _grid(len(keys), 1, (0.9 if len(keys) == 1 else 1.05) + 0.32 * n_methods)
        for j, key in enumerate(keys):
            ax, group = cells[j][0], in_group(qt, key)
            budget = float(in_group(best, key)["budget"].max())
            # The axis starts at the decade below the fastest seed; bars start there too.
            first = group["queries"].min() if group["reached"].any() else budget
            lo = 10.0 ** math.floor(math.log10(max(1.0, first)))
            miss = budget * 2.2  # where seeds that never reached it are drawn
            methods = [m for m in styles if m in set(group["method"])]
            for y, method in enumerate(methods):
                st, q = styles[method], group[group["method"] == method]["queries"].to_numpy(float)
                reached = q[~np.isnan(q)]
                median = np.median(np.where(np.isnan(q), np.inf, q))
                if np.isfinite(median):
                    ax.barh(y, median - lo, left=lo, height=0.6, color=st["color"], alpha=0.3,
                            edgecolor=st["color"], linewidth=0.8)
                else:
                    ax.text(lo * 1.15, y, "median not reached", ha="left", va="center",
                            fontsize=6.5, color="0.35")
                jitter = np.linspace(-0.15, 0.15, len(q)) if len(q) > 1 else np.zeros(1)
                ax.scatter(reached, y + jitter[~np.isnan(q)], color=st["color"],
                           marker=st["marker"], s=16, zorder=3, linewidths=0)
                ax.scatter(np.full(np.isnan(q).sum(), miss), y + jitter[np.isnan(q)],
                           facecolor="none", edgecolor=st["color"], marker=st["marker"], s=16,
                           zorder=3, linewidths=0.8)
            ax.axvspan(budget * 1.5, budget * 3.3, color="0.93", zorder=0, linewidth=0)
            ax.axvline(budget, color="0.45", linewidth=0.6, linestyle=":")
            ax.set_xscale("log")
            ax.set_xlim(lo, budget * 3.3)
            _log_ticks(ax, lo, budget, 0.8 * (COLUMN_IN - 1.2), extra={miss: "not\nreached"})
            ax.set_yticks(range(len(methods)), [styles[m]["label"] for m in methods])
            ax.set_ylim(n_methods - 0.5, -0.5)  # equal bar heights in every panel
            ax.tick_params(axis="y", length=0)
            ax.spines["left"].set_visible(False)
            ax.grid(True, axis="x", which="major")
            ax.set_xlabel(_queries_label(key[2]))
            goal = group["target"].iloc[0]
            ax.set_title(("" if len(keys) == 1 else _title(key) + "\n")
                         + f"target: {100 * goal:.1f}% validation accuracy")
        _save(fig, path)
    return ("queries each seed of a method's best full-budget setting needs to first reach the "
            "validation target (points; hollow in the grey band: never reached) and their median "
            "over seeds (bar; none when more than half never reach it); dotted line: the largest "
            "budget; log x axis.")


# ---------------------------------------------------------------- sensitivity


def _axis_kind(name: str, values: pd.Series) -> str:
    """How to draw a parameter: "categorical", "log" or "linear"."""
    if not _numeric(values):
        return "categorical"
    x = values.to_numpy(float)
    known = _space_kinds().get(name)
    if known is not None:
        categorical, log = known
    else:
        categorical = bool(np.all(x % 1 == 0) and values.nunique() <= _FEW)
        log = bool(np.all(x > 0) and x.max() / x.min() >= _LOG_RATIO)
    if categorical:
        return "categorical"
    return "log" if log and np.all(x > 0) else "linear"


def _value_text(v: Any) -> str:
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def plot_sensitivity(trials: pd.DataFrame, key: tuple, styles: dict[str, dict],
                     path: Path, title: str | None = None) -> str | None:
    """Final validation accuracy of every trial against each swept hyperparameter of the group.

    ``title`` (if given) goes above the panels: the group, when there are several.

    Returns:
        The caption, or None (and no file) when no hyperparameter took several values.
    """
    group = full_budget_runs(trials[(trials["status"] != "failed") & (trials["method"] != ZERO_SHOT)])
    group = in_group(group.rename(columns={"budget_unit": "unit"}), key)
    params = swept_params(group)
    if not params:
        return None
    ncol = min(3, len(params))
    nrow = math.ceil(len(params) / ncol)
    width = {1: COLUMN_IN, 2: 2 * COLUMN_IN * 0.8}.get(ncol, 2 * COLUMN_IN)
    stopped = bool((group["status"] == "stopped").any())
    with plt.rc_context(RC):
        fig, axes = plt.subplots(nrow, ncol, figsize=(width, 0.5 + 1.85 * nrow), sharey=True,
                                 squeeze=False)
        for ax in axes.flat[len(params):]:
            ax.axis("off")
        for k, name in enumerate(params):
            ax, col = axes.flat[k], group[f"param_{name}"]
            # Only methods that vary it: a fixed value says nothing about sensitivity.
            varies = group[col.notna()].groupby("method")[f"param_{name}"].nunique()
            have = group[col.notna() & group["method"].isin(varies[varies > 1].index)]
            methods = [m for m in styles if m in set(have["method"])]
            values = have[f"param_{name}"]
            kind = _axis_kind(name, values)
            numeric, log = kind != "categorical", kind == "log"
            if numeric:
                x_all = values.to_numpy(float)
                cats: list[Any] = []
            else:
                order = (lambda v: float(v)) if _numeric(values) else str
                cats = sorted(values.dropna().unique(), key=order)
            for i, method in enumerate(methods):
                st, mt = styles[method], have[have["method"] == method]
                off = (i - (len(methods) - 1) / 2) * (0.12 if not numeric else 0.025)
                if numeric:
                    x = mt[f"param_{name}"].to_numpy(float)
                    # A small shift per method keeps methods sharing a value apart.
                    x = x * 10 ** off if log else x + off * (np.ptp(x_all) or 1.0)
                else:
                    x = np.array([cats.index(v) for v in mt[f"param_{name}"]], float) + off
                done = (mt["status"] != "stopped").to_numpy()
                y = mt["final_val_acc"].to_numpy(float)
                ax.scatter(x[done], y[done], color=st["color"], marker=st["marker"], s=14,
                           linewidths=0, alpha=0.85)
                ax.scatter(x[~done], y[~done], facecolor="none", edgecolor=st["color"],
                           marker=st["marker"], s=14, linewidths=0.7)
            if log:
                ax.set_xscale("log")
                _log_ticks(ax, float(x_all.min()), float(x_all.max()), width / ncol - 0.4)
            if not numeric:
                texts = [_value_text(c) for c in cats]
                # Long category names collide side by side: slant them.
                slant = sum(len(t) for t in texts) * 0.07 > width / ncol - 0.4
                ax.set_xticks(range(len(cats)), texts, rotation=30 if slant else 0,
                              ha="right" if slant else "center",
                              rotation_mode="anchor" if slant else "default")
                ax.set_xlim(-0.6, len(cats) - 0.4)
            ax.set_xlabel(name)
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            ax.grid(True, which="major")
            if k % ncol == 0:
                ax.set_ylabel("Final val. accuracy")
        handles: list[Any] = [Line2D([], [], color=s["color"], marker=s["marker"], linestyle="",
                                     label=s["label"])
                              for m, s in styles.items() if m in set(group["method"])]
        if stopped:
            handles.append(Line2D([], [], color="0.3", marker="o", markerfacecolor="none",
                                  linestyle="", label="stopped early"))
        spare = axes.flat[len(params):]
        if len(spare):  # the legend fills the empty panel instead of adding a row
            spare[0].legend(handles=handles, loc="center", ncol=1 if len(spare) == 1 else 2)
        else:
            _legend(fig, handles, 4)
        if title:
            fig.suptitle(title)
        _save(fig, path)
    return ("final validation accuracy of every trial (one point per seed) against each swept "
            "hyperparameter" + ("; hollow: stopped early by the scheduler" if stopped else "")
            + "; log x axis for scale parameters; methods sharing a value are shifted apart.")


# ---------------------------------------------------------------- all figures


def _slug(key: tuple, with_unit: bool) -> str:
    dataset, shots, unit = key
    text = f"{dataset}_{shots}shot" + (f"_{unit}" if with_unit else "")
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text)


def write_figures(trials: pd.DataFrame, curves: pd.DataFrame, best: pd.DataFrame,
                  qt: pd.DataFrame, out: Path) -> list[tuple[str, str]]:
    """Write every figure to ``out``, each with the CSV of its numbers beside it
    (``sweep.report.figure_data``); returns (file name, caption) per figure written."""
    black_box = trials.groupby("method")["black_box"].first().astype(bool).to_dict()
    styles = method_styles(sorted(black_box), black_box)
    figures: list[tuple[str, str]] = []
    if best["sample_id"].notna().any():
        name = "accuracy_vs_queries.png"
        figures.append((name, plot_accuracy_vs_queries(trials, curves, best, styles, out / name)))
        write_csv(accuracy_vs_queries_data(trials, curves, best), out / name)
    if len(qt):
        name = "queries_to_target.png"
        figures.append((name, plot_queries_to_target(qt, best, styles, out / name)))
        write_csv(queries_to_target_data(qt, best), out / name)
    keys = sorted(best.groupby(GROUP).groups)
    with_unit = len({k[:2] for k in keys}) < len(keys)
    for key in keys:
        if len(keys) == 1:
            name, title = "sensitivity.png", None
        else:
            name = f"sensitivity_{_slug(key, with_unit)}.png"
            title = _title(key) + (f", budget in {UNIT_LABELS.get(key[2], key[2])}"
                                   if with_unit else "")
        caption = plot_sensitivity(trials, key, styles, out / name, title)
        if caption is not None:
            figures.append((name, (f"{title}: " if title else "") + caption))
            write_csv(sensitivity_data(trials, key), out / name)
    return figures
