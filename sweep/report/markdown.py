"""The Markdown of a sweep report: the sweep, its trials, and per group the best setting per budget.

The main tables and the importance section are rendered by their own modules
(``sweep.report.main_table``, ``sweep.report.importance``) and passed in.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import pandas as pd

from sweep.report.tables import (
    GROUP,
    TARGET_FRACTION,
    UNIT_LABELS,
    ZERO_SHOT,
    in_group,
    param_column_names,
    plain_value,
    target_summary,
    tuned_trials,
    zero_shot_summary,
)
from sweep.results import ACTORS_FILE, SweepInfo, describe_actors

__all__ = ["render_markdown"]


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


def _actors(sweep_dir: Path) -> str | None:
    """Where the sweep's oracle actors ran, from ``actors.json`` (None: not recorded)."""
    try:
        return describe_actors(json.loads((Path(sweep_dir) / ACTORS_FILE).read_text())["actors"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _overview(sweep_dir: Path, trials: pd.DataFrame, info: SweepInfo) -> list[str]:
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
    lines = [f"# Sweep report: {first['sweep']}", ""]
    if info.description:
        lines += [info.description, ""]
    actors = _actors(sweep_dir)
    lines += [
        f"- Results: `{sweep_dir}`",
        f"- Model: `{first['model']}`" + (f" ({', '.join(sorted(trials['model'].unique()))})"
                                           if trials["model"].nunique() > 1 else ""),
        *([f"- Oracle actors: {actors}"] if actors else []),
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
    chosen = ("the highest mean validation accuracy" if info.metric == "val_acc"
              else "the lowest mean validation loss")
    lines += ["", "Protocol: a setting is one hyperparameter sample (`sample_id`) run with "
              "every seed. At each budget level B every trial counts with its last checkpoint "
              f"that used at most B queries; each method's setting with {chosen} "
              "over seeds is chosen (`[search] metric`), and its validation and test accuracy "
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
    tuned = tuned_trials(trials)
    tuned = tuned[(tuned["dataset"] == dataset) & (tuned["shots"] == shots)
                  & (tuned["budget_unit"] == unit)]
    rows, fixed = [], []
    for method, g in sel.groupby("method", sort=True):
        mt = tuned[tuned["method"] == method]
        varied = [c.removeprefix("param_") for c in param_column_names(mt) if mt[c].nunique() > 1]
        const = {c.removeprefix("param_"): plain_value(mt[c].dropna().iloc[0])
                 for c in param_column_names(mt) if mt[c].nunique() == 1}
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
                    target: float | None = None, sections: Sequence[str] = (),
                    info: SweepInfo | None = None) -> str:
    """The Markdown report: overview, failed trials, ``sections`` (lines: the main tables,
    hyperparameter importance), a section per group, the figures. ``info``: the sweep's
    ``sweep.json`` (None: what a folder from before it ran with)."""
    info = info if info is not None else SweepInfo(name=Path(sweep_dir).name)
    lines = _overview(sweep_dir, trials, info)
    lines += list(sections)
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
    if figures:
        lines += ["", "Beside each figure, a CSV of the same name holds the numbers it draws."]
    return "\n".join(lines) + "\n"
