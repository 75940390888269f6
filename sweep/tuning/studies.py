"""Each sampling group's Optuna study, stored with the results in ``results/<sweep>/optuna.db``.

One study per group whose space samples something, named by the group's tag
(``bbt-digits-16shot``), its objective the sweep's ``[search] metric`` as a
trial reports it (``val_acc``, maximised, or ``val_loss``, minimised: the mean
over seeds at the setting's last checkpoint). Each Optuna trial is one
setting, with user attrs ``sample_id``, ``method``, ``dataset``, ``shots`` and
``seeds``, and as intermediate values the metric it reported at each checkpoint, the step
being the queries used (``queries``, in the group's budget unit). A setting
ends as its rows in the trials table say: PRUNED when ASHA stopped it (a row
``stopped``; Optuna gives it its last intermediate value), FAIL when every
seed failed, else COMPLETE. Groups of fixed settings (a space that samples
nothing) have no study.

The storage is SQLite through SQLAlchemy (Optuna's ``RDBStorage``). Only the
driver writes: the searchers live in it. SQLite's file locks make a reader in
another process (``optuna-dashboard results/<sweep>/optuna.db``) safe while the
sweep runs; a reader holds a shared lock while it reads, and the driver waits
for it (``LOCK_TIMEOUT_S``) rather than fail a write.

The results tables stay the record. A fresh sweep removes any storage left in
its folder. A resumed sweep rebuilds every study from its tables before its
searchers reopen them (``prepare_studies``): one finished trial per setting
whose rows hold every seed, its values recomputed from the curves as the trial
reported them. So a folder from before the studies gets them, and nothing the
tables no longer hold counts for the sampler: a trial cut short (left RUNNING
by a driver that died), or a setting whose parts were removed. A setting whose
seeds were lost, or that goes on from its checkpoint, reruns with its own
parameters (a repair group, no study); it joins its study when the run ends
(``record_repairs``).
"""

from __future__ import annotations

import datetime
import json
import math
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState as StudyState
from ray.tune.search.optuna import OptunaSearch

from sweep.errors import RayVersionError
from sweep.results import (
    STUDY_FILE,
    ResultsError,
    ResultsWarning,
    query_column,
    read_sweep,
    seed_status,
    study_storage,
)
from sweep.spec import MethodSpace, SweepSpec
from sweep.tuning.groups import SAMPLE
from sweep.tuning.plan import SweepPlan, group_tag, sample_index
from sweep.tuning.trial import UNMEASURED, sample_id_of

__all__ = ["DIRECTIONS", "LOCK_TIMEOUT_S", "TUNE_PRIVATE", "GroupSearch", "open_storage",
           "prepare_studies", "record_repairs", "record_settings", "remove_storage", "study_state"]

#: The studies' direction for each mode of ``[search] metric``.
DIRECTIONS = {"max": "maximize", "min": "minimize"}
#: How long a write waits for a reader's lock (optuna-dashboard's) before it fails.
LOCK_TIMEOUT_S = 60
#: The private attributes of Ray Tune's ``OptunaSearch`` that ``GroupSearch`` reads (Ray
#: 2.52-2.60), and their types: where they move, the studies fail at once, naming Ray's version.
TUNE_PRIVATE = {"_ot_trials": dict, "_ot_study": optuna.Study, "_completed_trials": set,
                "_metric": str}


def open_storage(results_dir: Path) -> optuna.storages.RDBStorage:
    """The studies' storage of the sweep in ``results_dir`` (created if missing).

    Raises:
        ResultsError: it cannot be opened or created (a read-only folder, a file of
            another kind).
    """
    url = study_storage(results_dir)
    try:
        return optuna.storages.RDBStorage(
            url, engine_kwargs={"connect_args": {"timeout": LOCK_TIMEOUT_S}})
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy's and Optuna's errors alike
        raise ResultsError(f"cannot open the Optuna studies {url}: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc


def remove_storage(results_dir: Path) -> None:
    """Remove the studies' storage of ``results_dir`` and SQLite's side files, if any.

    Raises:
        ResultsError: a file cannot be removed.
    """
    for suffix in ("", "-journal", "-wal", "-shm"):
        path = Path(results_dir) / (STUDY_FILE + suffix)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise ResultsError(f"cannot remove {path}: {exc.strerror or exc}") from exc


def study_state(statuses: Iterable[str]) -> StudyState:
    """A setting's state in its study, from its seeds' ``status`` in the trials table."""
    statuses = list(statuses)
    if all(s == "failed" for s in statuses):  # every seed failed (or none was heard of)
        return StudyState.FAIL
    return StudyState.PRUNED if "stopped" in statuses else StudyState.COMPLETE


class GroupSearch(OptunaSearch):
    """Ray Tune's ``OptunaSearch`` on a group's stored study (``study_name`` = ``tag``).

    Unlike ``OptunaSearch``, intermediate values go by queries used (ASHA's time
    axis), not by report number, and a trial ends as its rows will say
    (``study_state``): ASHA's stopped trials PRUNED, not COMPLETE. A storage that
    cannot be written warns and the sweep goes on: the tables are the record, and
    ``--resume`` rebuilds the study from them. It reads private attributes of
    ``OptunaSearch`` (``TUNE_PRIVATE``); a Ray without them fails at once with
    ``RayVersionError``, never a warning.

    Args:
        space: the group's define-by-run space.
        sampler: the group's seeded sampler.
        storage: the sweep's storage (``open_storage``).
        tag: the group's tag, its study's name.
        attrs: user attrs of every trial (method, data set, shots, seeds).
        metric, mode: what the trials' reports are judged by, and its direction.
    """

    def __init__(self, space: MethodSpace, sampler: optuna.samplers.BaseSampler,
                 storage: optuna.storages.BaseStorage, tag: str, attrs: Mapping[str, Any],
                 metric: str = "val_acc", mode: str = "max") -> None:
        super().__init__(space=space, metric=metric, mode=mode, sampler=sampler,
                         study_name=tag, storage=storage)
        for name, kind in TUNE_PRIVATE.items():  # checked once, here: never a warning
            if not isinstance(self.__dict__.get(name), kind):
                raise RayVersionError.moved(f"ray.tune.search.optuna.OptunaSearch.{name} "
                                            f"(a {kind.__name__}, which sweep.tuning.studies uses)")
        self._tag, self._attrs = tag, dict(attrs)
        self._latest: dict[str, dict[str, Any]] = {}  # each running trial's last result
        self._steps: dict[str, set[int]] = {}  # the steps each trial reported

    def label_trial(self, trial_id: str, sample: int) -> None:
        """Name ``trial_id``'s Optuna trial by its setting, the group's ``sample``-th."""
        trial = self._ot_trials[trial_id]
        attrs = {"sample_id": sample_id_of(self._tag, None, {SAMPLE: sample}), **self._attrs}

        def write() -> None:
            for key, value in attrs.items():
                trial.set_user_attr(key, value)

        self._guarded(write)

    def _guarded(self, write) -> None:
        try:
            write()
        except (AttributeError, NameError, TypeError):
            raise  # the code's errors (a part of Tune or Optuna moved), not the storage's
        except Exception as exc:  # noqa: BLE001 - the storage's errors are many (SQLAlchemy's)
            warnings.warn(f"study {self._tag}: {type(exc).__name__}: {exc}; the results tables "
                          "are written all the same (--resume rebuilds the study from them)",
                          ResultsWarning, stacklevel=3)

    def _report(self, trial_id: str, result: Mapping[str, Any]) -> None:
        if not any(o.get("checkpoints") for o in result.get("outcomes", ())):
            return  # no seed measured anything: the -1 stands for nothing
        step, steps = int(result["queries"]), self._steps.setdefault(trial_id, set())
        if step not in steps:  # a report at the same query count adds nothing new
            steps.add(step)
            trial, value = self._ot_trials[trial_id], float(result[self._metric])
            self._guarded(lambda: trial.report(value, step))

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        self._latest[trial_id] = result
        self._report(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        # Tune hands the last result (the one its scheduler stopped the trial on) only here.
        if result:
            self._report(trial_id, result)
        last = result or self._latest.get(trial_id) or {}
        # As ResultsCallback writes the rows: no outcomes, every seed failed.
        state = study_state([seed_status(o["status"], error) for o in last.get("outcomes", ())])
        value = float(last[self._metric]) if state == StudyState.COMPLETE else None
        study, trial = self._ot_study, self._ot_trials[trial_id]
        self._guarded(lambda: study.tell(trial, value, state=state))
        self._completed_trials.add(trial_id)
        self._latest.pop(trial_id, None)
        self._steps.pop(trial_id, None)


# ---------------------------------------------------------------- from the tables


def reports(seed_curves: Iterable[pd.DataFrame], unit: str,
            metric: str = "val_acc") -> list[tuple[int, float]]:
    """(queries, metric) of each report of a setting, from its seeds' curves (each sorted
    by checkpoint, in the order of the trial's seeds), as ``trial.summary`` made them: the
    mean over seeds of each seed's latest checkpoint, the most queries of them."""
    curves = [(c[metric].to_numpy(float), c[query_column(unit)].to_numpy())
              for c in seed_curves if len(c)]
    out = []
    for k in range(max((len(v) for v, _ in curves), default=0)):
        val = float(np.mean([float(v[min(k, len(v) - 1)]) for v, _ in curves]))
        out.append((int(max(q[min(k, len(q) - 1)] for _, q in curves)),
                    UNMEASURED[metric] if math.isnan(val) else val))  # as tune_trainable does
    return out


def _local(ts: pd.Timestamp, seconds: float = 0.0) -> datetime.datetime:
    """A table's UTC timestamp (plus ``seconds``) as Optuna keeps its times: local, naive."""
    moment = ts.to_pydatetime() + datetime.timedelta(seconds=0.0 if pd.isna(seconds) else seconds)
    return moment.astimezone().replace(tzinfo=None)


def _setting_trial(space: MethodSpace, rows: list[dict[str, Any]], curves: list[pd.DataFrame],
                   attrs: dict[str, Any], metric: str) -> optuna.trial.FrozenTrial:
    """One setting's finished trial, from its rows (one per seed) and their curves.

    Raises:
        ValueError: a parameter the space samples is missing (the specification changed).
    """
    params = json.loads(rows[0]["config_json"]).get("params", {})
    # The distributions: the space replayed on the setting's own values.
    fixed = optuna.trial.FixedTrial({space.prefix + k: v for k, v in params.items()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a value out of range: the trial check below says so
        space(fixed)
    steps: dict[int, float] = {}
    for step, value in reports(curves, rows[0]["budget_unit"], metric):
        steps.setdefault(step, value)  # as Optuna keeps a step's first report
    state = study_state(r["status"] for r in rows)
    value = None
    if state == StudyState.COMPLETE or (state == StudyState.PRUNED and steps):
        value = steps[max(steps)] if steps else UNMEASURED[metric]
    started = min(_local(r["started_at"]) for r in rows)
    ended = max(_local(r["started_at"], r["wall_s"]) for r in rows)
    return optuna.trial.FrozenTrial(
        number=0, trial_id=0, state=state, value=value, datetime_start=started,
        datetime_complete=ended, params=fixed.params, distributions=fixed.distributions,
        user_attrs=attrs, system_attrs={}, intermediate_values=steps)


def record_settings(storage: optuna.storages.BaseStorage, spec: SweepSpec, trials: pd.DataFrame,
                    curves: pd.DataFrame, only: set[str] | None = None) -> int:
    """Add to each group's study one finished trial per setting in ``trials`` whose rows
    hold every seed of ``spec`` (of the settings ``only``, if given), in the order of their
    indices; returns how many. Settings of methods no longer swept, or of spaces that
    sample nothing, are left out; so is one whose parameters the space no longer holds
    (with a warning)."""
    if not len(trials):
        return 0
    seeds = list(spec.data.seeds)
    order = {s: i for i, s in enumerate(seeds)}
    by_trial = dict(tuple(curves.groupby("trial_id", sort=False))) if len(curves) else {}
    added = 0
    for (method, dataset, shots), group in trials.groupby(["method", "dataset", "shots"]):
        if method not in spec.search.methods or spec.method(method).space.samples_nothing:
            continue
        space, tag = spec.method(method).space, group_tag(method, dataset, int(shots))
        study = None
        settings = sorted(group.groupby("sample_id"),
                          key=lambda kv: (sample_index(tag, kv[0]), kv[0]))
        for sample_id, setting in settings:
            if "budget_run" in setting:  # runs for a smaller level of [budget] limits: rows
                smaller = (setting["budget_run"] == "per-budget") & \
                    (setting["budget"] < setting["budget"].max())  # only, never reported
                setting = setting[~smaller.to_numpy(dtype=bool)]
            rows = sorted(setting.to_dict("records"),
                          key=lambda r: (order.get(r["seed"], len(seeds)), r["seed"]))
            if (only is not None and sample_id not in only) or \
                    not set(seeds) <= {r["seed"] for r in rows}:
                continue  # lost seeds: its repair reruns them, and it joins when that ends
            attrs = {"sample_id": sample_id, "method": method, "dataset": dataset,
                     "shots": int(shots), "seeds": [int(r["seed"]) for r in rows]}
            if study is None:
                study = optuna.create_study(storage=storage, study_name=tag,
                                            direction=DIRECTIONS[spec.search.mode],
                                            load_if_exists=True)
            empty = curves.iloc[:0]
            try:  # add_trial checks each value against its distribution first
                study.add_trial(_setting_trial(space, rows, [by_trial.get(r["trial_id"], empty)
                                                             for r in rows], attrs,
                                               spec.search.metric))
            except ValueError as exc:
                warnings.warn(f"setting {sample_id} is left out of its study: {exc}",
                              ResultsWarning, stacklevel=2)
                continue
            added += 1
    return added


def prepare_studies(plan: SweepPlan, resume: bool) -> None:
    """Before the searchers open the studies: a fresh sweep starts without any, a resumed
    one has them rebuilt from its tables (call it after ``remove_incomplete``)."""
    if not plan.results_dir.is_dir():
        return
    remove_storage(plan.results_dir)
    contents = plan.contents
    if resume and contents is not None and len(contents.trials):
        record_settings(open_storage(plan.results_dir), plan.spec, contents.trials,
                        contents.curves)


def record_repairs(plan: SweepPlan, storage: optuna.storages.BaseStorage | None) -> None:
    """After the run: the settings that repair groups completed join their studies."""
    repaired = {g.sample_id for g in plan.groups if g.sample_id and not g.space.samples_nothing}
    if repaired:
        contents = read_sweep(plan.results_dir)
        record_settings(storage or open_storage(plan.results_dir), plan.spec, contents.trials,
                        contents.curves, only=repaired)
