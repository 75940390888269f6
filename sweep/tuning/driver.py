"""The sweep driver: Ray, the oracle pool, one Ray Tune run per (data set, shots, method), results.

For every group of the plan (``sweep.tuning.plan``), a ``tune.Tuner`` runs
``samples`` settings chosen by Optuna (TPE, seeded) over the method's search
space, ``concurrency`` at a time; each trial runs every seed of its setting
in lockstep (``sweep.tuning.trial``). Trials only report;
``ResultsCallback``, in the driver, turns each finished trial into one row
per seed and writes the part files. Selection uses validation accuracy only.
"""

from __future__ import annotations

import logging
import os
import zlib
from pathlib import Path

from tqdm import tqdm

from sweep.oracle import OraclePool
from sweep.results import ResultsWriter, remove_incomplete
from sweep.spec import SweepSpec
from sweep.tuning.callbacks import ResultsCallback, stop_on_error, tune_callback
from sweep.tuning.plan import plan_sweep
from sweep.tuning.preflight import check_inputs
from sweep.tuning.trial import TrialSetting, tune_trainable

__all__ = ["run_sweep", "start_ray"]


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
        check_inputs(spec, progress)  # before anything is removed, written or started
    if resume and plan.state is not None:
        print(plan.state.summary())
        remove_incomplete(plan.results_dir, plan.state.incomplete)
    print(plan.describe())
    if not plan.groups:
        return plan.results_dir
    writer = ResultsWriter(Path(results_root), spec.name, plan.param_types)
    start_ray(address)
    pool = OraclePool(spec.model, spec.resources.actors,
                      gpus_per_actor=spec.resources.gpus_per_actor,
                      cpus_per_actor=spec.resources.cpus_per_actor,
                      pixel_folder=spec.data.cache, cache_bytes=spec.resources.cache_bytes)
    bar = tqdm(total=plan.trials, desc="trials", unit="trial", disable=not progress)
    counters = {"queries": 0, "best_val": float("-inf"), "failed": 0}
    try:
        for group in plan.groups:
            budget, space = group.budget, group.space
            base = TrialSetting(group.method, {}, group.dataset, spec.data.root, group.shots,
                                group.seeds, budget.to_budget_spec(), budget.checkpoints)
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
                    stop=stop_on_error(callback),
                    # Tune's JSON log only, which its result grid reads back; the tables are ours.
                    callbacks=[tune_callback(callback), JsonLoggerCallback()]),
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
