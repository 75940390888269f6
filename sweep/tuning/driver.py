"""The sweep driver: Ray, the oracle pool, one Ray Tune run per (data set, shots, method), results.

For every data set, shot count and method of the specification, a
``tune.Tuner`` runs ``samples`` settings chosen by Optuna (TPE, seeded) over
the method's search space, ``concurrency`` at a time; each trial runs every
seed of its setting in lockstep (``sweep.trainable``). Trials only report;
``ResultsCallback``, in the driver, turns each finished trial into one row
per seed and writes the part files. Selection uses validation accuracy only.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from sweep.errors import ConfigError
from sweep.loop import CheckpointRecord
from sweep.pool import OraclePool
from sweep.preflight import check_inputs
from sweep.results import (
    ResultsError,
    ResultsWriter,
    TrialRecord,
    load_results,
    remove_incomplete,
    scan,
)
from sweep.spaces import param_columns, sample_to_config
from sweep.spec import SweepSpec
from sweep.trainable import TrialSetting, tune_trainable

__all__ = ["SweepPlan", "plan_sweep", "run_sweep", "start_ray"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Group:
    """One Tune run: a method on a data set at a shot count."""

    method: str
    dataset: str
    shots: int
    samples: int  # settings still to run
    offset: int  # settings already complete (from an earlier, interrupted run)
    #: a repair: the setting ``sample_id`` with ``params`` lost some seeds; rerun just those.
    sample_id: str | None = None
    params: dict[str, Any] | None = None
    seeds: tuple[int, ...] | None = None

    @property
    def tag(self) -> str:
        return f"{self.method}-{self.dataset}-{self.shots}shot"


@dataclass
class SweepPlan:
    spec: SweepSpec
    results_dir: Path
    groups: list[Group] = field(default_factory=list)

    @property
    def trials(self) -> int:
        """Result rows still to come (settings x seeds)."""
        return sum(g.samples * len(g.seeds or self.spec.data.seeds) for g in self.groups)

    def describe(self) -> str:
        lines = [f"sweep {self.spec.name!r} -> {self.results_dir}"]
        for g in self.groups:
            b = self.spec.budget_for(g.method)
            if g.sample_id:
                lines.append(f"  {g.sample_id}: rerun seeds {', '.join(map(str, g.seeds))}")
                continue
            done = f" ({g.offset} done)" if g.offset else ""
            lines.append(f"  {g.tag}: {g.samples} settings{done} x {len(self.spec.data.seeds)} seeds, "
                         f"budget {b.limit:,} {b.unit}, {b.checkpoints} checkpoints")
        lines.append(f"  {self.trials} trials to run")
        return "\n".join(lines)


def plan_sweep(spec: SweepSpec, results_root: str | Path = "results", resume: bool = False) -> SweepPlan:
    """What remains to run. Refuses to overwrite a sweep's results unless resuming."""
    results_dir = spec.results_dir(results_root)
    done: dict[tuple[str, str, int], int] = {}
    repairs: list[Group] = []
    if results_dir.exists():
        state = scan(results_dir)
        if state.complete and not resume:
            raise ConfigError(
                f"{results_dir} already holds {len(state.complete)} trials; "
                "pass --resume to complete it, or give the sweep another name")
        if state.complete:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # incomplete parts are reported by the caller
                trials, _ = load_results(results_dir)
            trials = trials[trials["trial_id"].isin(state.complete)]
            for (m, d, s), rows in trials.groupby(["method", "dataset", "shots"]):
                done[(m, d, int(s))] = rows["sample_id"].nunique()
                for sample_id, seeds in rows.groupby("sample_id"):
                    missing = tuple(x for x in spec.data.seeds if x not in set(seeds["seed"]))
                    if missing:  # a setting that lost seeds: rerun those with its parameters
                        params = json.loads(seeds["config_json"].iloc[0]).get("params", {})
                        repairs.append(Group(m, d, int(s), 1, 0, sample_id, params, missing))
    plan = SweepPlan(spec, results_dir, list(repairs))
    for dataset in spec.data.datasets:
        for shots in spec.data.shots:
            for method in spec.search.methods:
                have = done.get((method, dataset, shots), 0)
                todo = spec.samples_for(method) - have
                if todo > 0:
                    plan.groups.append(Group(method, dataset, shots, todo, have))
    return plan


def start_ray(address: str | None = None) -> None:
    """Join a cluster (``address``), or start a private local Ray on the loopback address."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Tune's new console output prints tables on every run whatever ``verbose`` says;
    # the legacy reporter honours verbose=0. Progress is ours (tqdm).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # No TensorBoard/CSV/JSON loggers: results are ours, in Parquet.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    else:
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, logging_level=logging.WARNING,
                 _node_ip_address="127.0.0.1", log_to_driver=False,
                 object_store_memory=512 * 1024 * 1024)


class ResultsCallback:
    """Driver side: keeps each trial's latest report, writes its rows when it ends; shows progress.

    A write that fails (disk full, read-only folder) is kept in ``error`` and nothing
    more is written: the sweep stops (``_stop_on_error``) and ``run_sweep`` raises it.
    """

    def __init__(self, writer: ResultsWriter, spec: SweepSpec, group: Group, bar: tqdm,
                 progress: dict[str, Any]) -> None:
        self.writer, self.spec, self.group, self.bar, self.progress = writer, spec, group, bar, progress
        self.latest: dict[str, dict[str, Any]] = {}
        self.space = spec.space(group.method)
        self.counter_base = 0
        self.error: ResultsError | None = None

    def _index(self, trial) -> int:
        # Settings are numbered in the order Tune creates them (the counter that leads its
        # experiment tag: 1-based behind a searcher, 0-based without one), after those
        # already done: deterministic ids, whichever trial happens to report first.
        counter = int(str(trial.experiment_tag).split("_", 1)[0])
        return self.group.offset + counter - self.counter_base

    def on_trial_result(self, trial, result: dict[str, Any]) -> None:
        self.latest[trial.trial_id] = result

    def on_trial_end(self, trial, error: str | None) -> None:
        if self.error is not None:
            return
        result = self.latest.get(trial.trial_id, {})
        if self.group.sample_id:
            sample_id, params = self.group.sample_id, dict(self.group.params or {})
        else:
            sample_id = f"{self.group.tag}-{self._index(trial):03d}"
            params = sample_to_config(self.group.method, self.space.hyperparameters(trial.config))
        outcomes = result.get("outcomes") or [
            {"seed": s, "status": "failed", "records": []}
            for s in (self.group.seeds or self.spec.data.seeds)]
        budget = self.spec.budget_for(self.group.method)
        for out in outcomes:
            status = {"ok": "completed", "failed": "failed"}.get(out["status"], "stopped")
            if error and status != "completed":
                status = "failed"
            records = [CheckpointRecord(r["checkpoint"], _counts(r), r["train_loss"], r["val_acc"],
                                        r["test_acc"], r["wall_s"]) for r in out["records"]]
            identity = dict(
                trial_id=f"{sample_id}-s{out['seed']}", sweep=self.spec.name, sample_id=sample_id,
                method=self.group.method, model=self.spec.model.to_model_spec().label,
                dataset=self.group.dataset, shots=self.group.shots, seed=out["seed"],
                budget_unit=budget.unit, budget=budget.limit, params=params,
                estimator=params.get("estimator"), device=out.get("device"),
                started_at=out.get("started_at") or time.time(),
                nonfinite_losses=int(out.get("nonfinite_losses") or 0),
                config={"method": self.group.method, "params": params, "budget": budget.limit,
                        "unit": budget.unit, "dataset": self.group.dataset, "shots": self.group.shots,
                        "seed": out["seed"], "model": self.spec.model.to_model_spec().label},
            )
            queries = records[-1].queries if records else _counts({})
            if status == "failed":
                record = TrialRecord.from_failure(out.get("error") or error or "trial failed",
                                                  queries=queries, checkpoints=records, **identity)
            else:
                record = TrialRecord(status=status, queries=queries, checkpoints=records,
                                     stop_reasons=out.get("stop_reasons") or {},
                                     wall_s=out.get("wall_s"), **identity)
            try:
                self.writer.write(record)
            except ResultsError as exc:
                self.error = exc
                return
            self.progress["queries"] += queries[budget.unit]
            if records and records[-1].val_acc == records[-1].val_acc:  # not nan
                self.progress["best_val"] = max(self.progress["best_val"], records[-1].val_acc)
            self.progress["failed"] += status == "failed"
            self.bar.update(1)
        self.bar.set_postfix(best_val=f"{self.progress['best_val']:.1%}",
                             queries=f"{self.progress['queries']:,}", failed=self.progress["failed"])


def _counts(row: dict[str, Any]):
    from sweep.budget import UNITS, QueryCounts

    return QueryCounts(*(int(row.get(f"queries_{u}", 0)) for u in UNITS))


def _tune_callback(inner: ResultsCallback):
    """A Ray Tune Callback that forwards to ``inner`` (defined late: importing ray is slow)."""
    from ray import tune

    class _Forward(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            inner.on_trial_result(trial, result)

        def on_trial_complete(self, iteration, trials, trial, **info):
            inner.on_trial_end(trial, None)

        def on_trial_error(self, iteration, trials, trial, **info):
            err = trial.get_error()
            inner.on_trial_end(trial, str(err).strip().splitlines()[-1] if err else "trial errored")

    return _Forward()


def _stop_on_error(inner: ResultsCallback):
    """A Ray Tune Stopper that stops every trial once ``inner`` could not write."""
    from ray.tune.stopper import Stopper

    class _StopOnError(Stopper):
        def __call__(self, trial_id, result) -> bool:
            return False

        def stop_all(self) -> bool:
            return inner.error is not None

    return _StopOnError()


def run_sweep(spec: SweepSpec, *, address: str | None = None, resume: bool = False,
              results_root: str | Path = "results", progress: bool = True) -> Path:
    """Run the sweep of ``spec`` to completion; returns its results folder.

    Raises:
        ConfigError, DataError, ModelError: bad input (results to overwrite, a data
            root, an image of a few-shot draw, the model), before anything is written
            or Ray starts.
        ResultsError: the results folder cannot be created or written in (before Ray
            starts), or a part file cannot be written: the sweep stops, leaving the
            parts already written whole and no partial one.
    """
    import optuna
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    plan = plan_sweep(spec, results_root, resume)
    if plan.groups:
        check_inputs(spec)  # before anything is removed, written or started
    if resume and plan.results_dir.exists():
        state = scan(plan.results_dir)
        print(state.summary())
        remove_incomplete(plan.results_dir, state.incomplete)
    print(plan.describe())
    if not plan.groups:
        return plan.results_dir
    writer = ResultsWriter(Path(results_root), spec.name, param_columns(spec))
    start_ray(address)
    pool = OraclePool(spec.model.to_model_spec(), spec.resources.actors,
                      gpus_per_actor=spec.resources.gpus_per_actor,
                      cpus_per_actor=spec.resources.cpus_per_actor)
    bar = tqdm(total=plan.trials, desc="trials", unit="trial", disable=not progress)
    counters = {"queries": 0, "best_val": float("-inf"), "failed": 0}
    try:
        for group in plan.groups:
            budget = spec.budget_for(group.method)
            space = spec.space(group.method)
            base = TrialSetting(group.method, {}, group.dataset, spec.data.root, group.shots,
                                tuple(group.seeds or spec.data.seeds), budget.to_budget_spec(),
                                budget.checkpoints)
            context = {"pool": pool, "base": base, "fixed": dict(space.fixed)}
            if group.sample_id:
                search_alg, param_space = None, dict(group.params or {})
            elif space.samples_nothing:
                search_alg, param_space = None, dict(space.fixed)
            else:
                # Seeded per group and by how many settings already exist, so a resumed
                # sweep draws new settings rather than repeating the first ones.
                seed = zlib.crc32(f"{spec.search.seed}/{group.tag}/{group.offset}".encode())
                sampler = (optuna.samplers.TPESampler(seed=seed) if spec.search.sampler == "tpe"
                           else optuna.samplers.RandomSampler(seed=seed))
                search_alg = OptunaSearch(space=space, metric="val_acc", mode="max", sampler=sampler)
                param_space = None
            scheduler = FIFOScheduler()
            if spec.search.scheduler == "asha":
                # max_t one past the budget: a setting that spends it all is not "stopped" at
                # its last checkpoint before it can report that it is done.
                scheduler = ASHAScheduler(time_attr="queries", max_t=budget.limit + 1,
                                          grace_period=max(1, int(spec.search.grace_fraction * budget.limit)),
                                          reduction_factor=spec.search.reduction_factor)
            callback = ResultsCallback(writer, spec, group, bar, counters)
            callback.counter_base = 1 if search_alg is not None else 0
            tuner = tune.Tuner(
                tune.with_resources(tune.with_parameters(tune_trainable, context=context), {"cpu": 1}),
                param_space=param_space,
                tune_config=tune.TuneConfig(metric="val_acc", mode="max", search_alg=search_alg,
                                            scheduler=scheduler, num_samples=group.samples,
                                            max_concurrent_trials=spec.resources.concurrency,
                                            # a trial worker imports torch once, not once per trial
                                            reuse_actors=True),
                run_config=tune.RunConfig(
                    name=group.tag, storage_path=str(plan.results_dir.resolve() / ".tune"), verbose=0,
                    stop=_stop_on_error(callback),
                    # Tune's JSON log only, which its result grid reads back; the tables are ours.
                    callbacks=[_tune_callback(callback), JsonLoggerCallback()]),
            )
            tuner.fit()
            if callback.error is not None:
                raise callback.error
    finally:
        bar.close()
        pool.shutdown()
    print(f"done: {plan.trials} trials, {counters['failed']} failed, {counters['queries']:,} queries; "
          f"results in {plan.results_dir}")
    return plan.results_dir
