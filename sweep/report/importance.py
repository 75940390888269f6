"""Hyperparameter importance per sampling group: Optuna's fANOVA (``importance.png``).

A sampling group is one method on one data set at one shot count, the
Optuna study the sweep drew its settings from, named by the group's tag
``<method>-<dataset>-<shots>shot``. Its importances are
``optuna.importance.get_param_importances`` with
``FanovaImportanceEvaluator(seed=0)`` (deterministic), over the study's
completed settings, each valued by the sweep's selection metric (its
validation accuracy, or with ``[search] metric = "val_loss"`` its loss).

Where the study comes from, group by group:

* the sweep's stored studies, ``results/<sweep>/optuna.db`` (SQLite, one
  study per group; ASHA-stopped settings are PRUNED there, so only
  completed ones count, and a setting every seed of which failed, reported
  as -1, is left out), when the file holds the group's study;
* otherwise (older results) a study rebuilt from the trials table: one
  COMPLETE trial per setting whose seeds all completed (none stopped),
  valued by its mean final validation metric over those seeds, with
  distributions inferred from the ``param_<name>`` columns that vary within
  the group (a float over the observed range, on a log scale when positive
  and spanning two decades or more; an integer likewise; strings and
  booleans as categories). A group run once per budget counts with its
  runs for its largest budget.

A group with fewer than ``MIN_SETTINGS`` completed settings is omitted,
with a note. ``importance.csv`` holds every bar drawn. Optuna is imported
only here, when importances are computed.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sweep.report.figures import COLUMN_IN, RC, _save, plt
from sweep.report.tables import (
    ZERO_SHOT,
    param_column_names,
    per_budget_mask,
    plain_value,
    usable_trials,
)
from sweep.results import STUDY_FILE, study_storage
from sweep.spec import DEFAULT_SPACES

if TYPE_CHECKING:
    import optuna

__all__ = ["GROUP_COLUMNS", "IMPORTANCE_COLUMNS", "MIN_SETTINGS", "param_importances",
           "plot_importance", "render_importance", "study_from_trials"]

#: Completed settings a group needs before its importances are computed.
MIN_SETTINGS = 8
#: Where a group's study came from: the sweep's stored studies, or the trials table.
STORED, REBUILT = "stored study (optuna.db)", "rebuilt from the trials table"
GROUP_COLUMNS = ["group", "method", "dataset", "shots", "source", "n_settings", "computed", "note"]
IMPORTANCE_COLUMNS = ["group", "method", "dataset", "shots", "source", "n_settings", "param",
                      "importance"]
# Values spanning this ratio or more (all positive) get a log distribution: two decades.
_LOG_RATIO = 100.0


def _int_params() -> set[str]:
    return {p.name for params in DEFAULT_SPACES.values() for p in params if p.kind == "int"}


def _distribution(name: str, values: pd.Series) -> Any:
    """An Optuna distribution over the values a parameter took in a group."""
    import optuna

    dist = optuna.distributions
    numeric = (pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values))
    if not numeric:
        choices = sorted({plain_value(v) for v in values}, key=lambda v: (str(type(v)), v))
        return dist.CategoricalDistribution(choices)
    x = values.to_numpy(float)
    log = bool(x.min() > 0 and x.max() / x.min() >= _LOG_RATIO)
    # An integer column with nulls (another method lacks the parameter) reads as floats.
    integral = pd.api.types.is_integer_dtype(values) or (
        name in _int_params() and bool(np.all(x % 1 == 0)))
    if integral:
        return dist.IntDistribution(int(x.min()), int(x.max()), log=log)
    return dist.FloatDistribution(float(x.min()), float(x.max()), log=log)


def _completed_settings(group: pd.DataFrame, metric: str = "val_acc") -> pd.DataFrame:
    """One row per setting whose seeds all completed: ``sample_id``, its params, ``value``
    (the mean over seeds of its final ``metric``)."""
    usable = usable_trials(group)
    per = per_budget_mask(usable)
    if per.any():  # run once per budget: the runs for the largest budget
        usable = usable[per]
        usable = usable[usable["budget"] == usable["budget"].max()]
    column = f"final_{metric}"
    if column not in usable:  # results before schema version 5 measured no loss
        return pd.DataFrame()
    rows = []
    for _, s in usable.groupby("sample_id", sort=True):
        if (s["status"] != "completed").any() or s[column].isna().all():
            continue
        rows.append(s.iloc[0].drop([column]).to_dict() | {"value": float(s[column].mean())})
    return pd.DataFrame(rows)


def study_from_trials(group: pd.DataFrame, metric: str = "val_acc") -> optuna.Study:
    """An in-memory study of one sampling group's completed settings (module docstring).

    Args:
        group: the trials of one method, data set and shot count (any status).
        metric: the sweep's selection metric, ``val_acc`` or ``val_loss``.
    """
    import optuna

    settings = _completed_settings(group, metric)
    cols = [c for c in param_column_names(settings)
            if settings[c].dropna().nunique() > 1] if len(settings) else []
    dists = {c: _distribution(c.removeprefix("param_"), settings[c].dropna()) for c in cols}
    trials = []
    for _, row in settings.iterrows():
        params = {c.removeprefix("param_"): _cast(row[c], dists[c]) for c in cols
                  if not pd.isna(row[c])}
        trials.append(optuna.trial.create_trial(
            params=params, value=row["value"],
            distributions={c.removeprefix("param_"): dists[c] for c in cols
                           if not pd.isna(row[c])}))
    study = optuna.create_study(direction="minimize" if metric == "val_loss" else "maximize")
    study.add_trials(trials)
    return study


def _cast(value: Any, dist: Any) -> Any:
    import optuna

    value = plain_value(value)
    if isinstance(dist, optuna.distributions.IntDistribution):
        return int(value)
    if isinstance(dist, optuna.distributions.FloatDistribution):
        return float(value)
    return value


def _measured(trial: optuna.trial.FrozenTrial) -> float:
    """A completed setting's validation accuracy or loss; NaN (left out) for what a sweep
    reports for a setting every seed of which failed (-1 or infinity: ``sweep.tuning.trial``),
    or no value."""
    value = trial.value
    return float(value) if value is not None and math.isfinite(value) and value >= 0 else math.nan


def _stored_studies(sweep_dir: Path | None) -> tuple[str | None, set[str], str | None]:
    """(storage URL, its study names, a problem reading it) of ``sweep_dir``'s stored studies."""
    if sweep_dir is None or not (Path(sweep_dir) / STUDY_FILE).is_file():
        return None, set(), None
    import optuna

    url = study_storage(sweep_dir)
    try:
        return url, set(optuna.study.get_all_study_names(storage=url)), None
    except Exception as exc:  # noqa: BLE001 - an unreadable file is reported, not fatal
        return None, set(), f"{STUDY_FILE} does not read ({type(exc).__name__}: {exc})"


def param_importances(trials: pd.DataFrame, sweep_dir: Path | str | None = None,
                      metric: str = "val_acc") -> tuple[pd.DataFrame, pd.DataFrame]:
    """fANOVA importances of every sampling group with enough completed settings.

    Args:
        trials: the trials table.
        sweep_dir: the results folder, where ``optuna.db`` may hold the studies.
        metric: the sweep's selection metric (the stored studies' objective).

    Returns:
        ``(importances, groups)``: ``IMPORTANCE_COLUMNS``, one row per computed
        group and parameter, most important first; and ``GROUP_COLUMNS``, one
        row per group: its study's source, completed settings, whether it was
        computed and, if not, why.
    """
    import optuna

    url, stored, problem = _stored_studies(Path(sweep_dir) if sweep_dir is not None else None)
    tuned = trials[trials["method"] != ZERO_SHOT]
    imp_rows: list[dict[str, Any]] = []
    group_rows: list[dict[str, Any]] = []
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        for (method, dataset, shots), g in tuned.groupby(["method", "dataset", "shots"],
                                                          sort=True):
            tag = f"{method}-{dataset}-{shots}shot"
            if tag in stored:
                study, source = optuna.load_study(study_name=tag, storage=url), STORED
            else:
                study, source = study_from_trials(g, metric), REBUILT
            done = study.get_trials(deepcopy=False,
                                    states=(optuna.trial.TrialState.COMPLETE,))
            n = sum(1 for t in done if not math.isnan(_measured(t)))
            base = dict(group=tag, method=method, dataset=dataset, shots=int(shots),
                        source=source, n_settings=n)
            note = None
            if n < MIN_SETTINGS:
                note = f"{n} completed setting{'' if n == 1 else 's'}, fewer than {MIN_SETTINGS}"
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    importances = optuna.importance.get_param_importances(
                        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
                        target=_measured)
                if not importances:
                    note = "no hyperparameter varies"
                imp_rows += [{**base, "param": p, "importance": float(v)}
                             for p, v in importances.items()]
            group_rows.append({**base, "computed": note is None, "note": note})
    finally:
        optuna.logging.set_verbosity(verbosity)
    groups = pd.DataFrame(group_rows, columns=GROUP_COLUMNS)
    groups.attrs["storage_problem"] = problem
    return pd.DataFrame(imp_rows, columns=IMPORTANCE_COLUMNS), groups


def render_importance(importances: pd.DataFrame, groups: pd.DataFrame) -> list[str]:
    """The ``## Hyperparameter importance`` section as Markdown lines."""
    if groups.empty:
        return []
    lines = ["", "## Hyperparameter importance", "",
             "fANOVA (Optuna's `FanovaImportanceEvaluator(seed=0)`) of validation accuracy over "
             "each sampling group's completed settings, for a group with at least "
             f"{MIN_SETTINGS} (`importance.png`, `importance.csv`)."]
    problem = groups.attrs.get("storage_problem")
    if problem:
        lines += ["", f"The stored studies were not used: {problem}."]
    done = groups[groups["computed"]]
    if len(done):
        lines += ["", "| group | study | settings | importance |", "|---|---|---:|---|"]
        for r in done.itertuples():
            imp = importances[importances["group"] == r.group]
            text = ", ".join(f"{p} {v:.2f}" for p, v in zip(imp["param"], imp["importance"]))
            lines.append(f"| {r.group} | {r.source} | {r.n_settings} | {text or '–'} |")
    skipped = groups[~groups["computed"]]
    few = skipped[skipped["n_settings"] < MIN_SETTINGS]
    if len(few):
        lines += ["", f"Omitted, fewer than {MIN_SETTINGS} completed settings: "
                  + ", ".join(f"{r.group} ({r.n_settings})" for r in few.itertuples()) + "."]
    other = skipped[skipped["n_settings"] >= MIN_SETTINGS]
    if len(other):
        lines += ["", "Omitted: " + "; ".join(f"{r.group} ({r.note})"
                                              for r in other.itertuples()) + "."]
    rebuilt = groups.loc[groups["source"] == REBUILT, "group"].tolist()
    if not rebuilt:
        lines += ["", f"Every study was read from `{STUDY_FILE}`."]
    elif len(rebuilt) == len(groups):
        lines += ["", f"Every study was rebuilt from the trials table (no study of the group in "
                  f"`{STUDY_FILE}`, or no such file: older results)."]
    else:
        lines += ["", f"Studies were read from `{STUDY_FILE}`, except those rebuilt from the "
                  f"trials table: {', '.join(rebuilt)}."]
    return lines


def plot_importance(importances: pd.DataFrame, styles: dict[str, dict], path: Path) -> str:
    """Horizontal bars of each parameter's importance, one panel per computed group.

    Returns:
        The figure's caption.
    """
    groups = list(dict.fromkeys(importances["group"]))
    cols = min(len(groups), 2)
    rows = math.ceil(len(groups) / cols)
    most = int(importances.groupby("group").size().max())
    with plt.rc_context(RC):
        fig, axes = plt.subplots(rows, cols, squeeze=False,
                                 figsize=(COLUMN_IN * cols, rows * (0.55 + 0.2 * most)))
        for ax in axes.flat[len(groups):]:
            ax.axis("off")
        for ax, tag in zip(axes.flat, groups):
            g = importances[importances["group"] == tag]
            color = styles.get(g["method"].iloc[0], {}).get("color", "0.3")
            y = np.arange(len(g))
            ax.barh(y, g["importance"], height=0.6, color=color, alpha=0.8, linewidth=0)
            ax.set_yticks(y, list(g["param"]))
            ax.set_ylim(most - 0.5, -0.5)
            ax.set_xlim(0, 1)
            ax.tick_params(axis="y", length=0)
            ax.grid(True, axis="x", which="major")
            ax.set_xlabel("fANOVA importance")
            ax.set_title(f"{tag} ({g['n_settings'].iloc[0]} settings)")
        _save(fig, path)
    return ("importance of each hyperparameter for validation accuracy (fANOVA, Optuna, seed 0) "
            "per sampling group with at least " f"{MIN_SETTINGS} completed settings; "
            "importances of a group sum to 1.")
