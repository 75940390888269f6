"""The sweep driver: Ray, the oracle pool, one Ray Tune run for all groups of the plan, results.

One ``tune.Tuner`` runs every group of the plan (``sweep.tuning.plan``):
``concurrency`` trials at a time across all groups until the plan is done,
each group's ``samples`` settings chosen by its own Optuna study (TPE,
seeded) over its method's search space and scheduled by its own scheduler
(``sweep.tuning.groups``); each trial runs every seed of its setting in
lockstep (``sweep.tuning.trial``). Trials only report; ``ResultsCallback``,
in the driver, turns each finished trial into one row per seed and writes
the part files, and hands each row to the experiment trackers of
``[tracking]`` (``sweep.tracking``), if any. Selection uses the validation split only (``[search] metric``:
its accuracy or its loss). The studies live in
``results/<sweep>/optuna.db`` (``sweep.tuning.studies``): a fresh sweep starts
without any, a resumed one rebuilds them from its tables first.

Each oracle actor asks for ``SweepSpec.actor_gpus`` GPUs; a request the
cluster can never meet (no GPUs, and no autoscaler to start them) fails at
once, with one line (``sweep.tuning.placement``), and on an autoscaling
cluster the launch fails with one line when the actors have not started after
``[resources] placement_timeout_s`` (the GPUs they ask for never came). An
actor that cannot be set up on its node (its device, model, cache folder or
data root: ``ActorSetupError``) stops the sweep, at its start or when a
trial first meets it, and so does a sweep whose every trial failed
(``SweepFailedError``); a failure's traceback is kept in
``results/<sweep>/logs/`` and its last lines shown. A
trial keeps its state at every budget checkpoint (``sweep.checkpoints``), so
a trial whose process is lost is started again by Tune
(``[resources] trial_restarts``) and goes on from there, as does a trial cut
short by the launcher's end, on ``--resume``.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from pathlib import Path

from tqdm import tqdm

from sweep.checkpoints import CheckpointStore, key_file, load_key, remove_checkpoint
from sweep.data import DATASETS
from sweep.errors import ConfigError, PromptTuningError
from sweep.oracle import ActorSetupError, OraclePool, OracleServer, PlacementError
from sweep.results import (
    ACTORS_FILE,
    ResultsWriter,
    SweepInfo,
    describe_actors,
    remove_incomplete,
    write_info,
)
from sweep.spec import SWEEP_METHODS, SweepSpec
from sweep.tracking import open_trackers
from sweep.tuning.auth import joined_mode, private_token
from sweep.tuning.callbacks import LOGS, ResultsCallback, keep_log, stop_on_error, tune_callback
from sweep.tuning.groups import GroupedScheduler, GroupedSearcher, SettingSource
from sweep.tuning.placement import capacity, check_gpus
from sweep.tuning.plan import Group, plan_sweep
from sweep.tuning.preflight import check_inputs
from sweep.tuning.trial import TrialSetting, tune_trainable

__all__ = ["ACTOR_REPORT", "PASSED_ENV", "run_sweep", "start_ray"]

#: The launcher's environment variables every actor and trial gets (``start_ray``).
PASSED_ENV = ("HF_HUB_OFFLINE",)


def _source(spec: SweepSpec, group: Group, storage) -> SettingSource:
    """Where the settings of ``group`` come from: an Optuna study of its own, stored in
    ``storage`` (``sweep.tuning.studies``), or a fixed setting."""
    import optuna

    from sweep.tuning.studies import GroupSearch

    if group.sample_id:  # a repair: the lost seeds of a setting, with its parameters
        return SettingSource(group.samples, group.offset, fixed=group.params)
    if group.space.samples_nothing:
        return SettingSource(group.samples, group.offset, fixed=group.space.fixed)
    # Seeded per group and by how many settings already exist, so a resumed sweep draws
    # new settings rather than repeating the first ones; its study holds the earlier ones
    # (rebuilt from the tables), so TPE is told of them.
    seed = zlib.crc32(f"{spec.search.seed}/{group.tag}/{group.offset}".encode())
    sampler = (optuna.samplers.TPESampler(seed=seed) if spec.search.sampler == "tpe"
               else optuna.samplers.RandomSampler(seed=seed))
    attrs = {"method": group.method, "dataset": group.dataset, "shots": group.shots,
             "seeds": list(group.seeds)}
    return SettingSource(group.samples, group.offset,
                         GroupSearch(group.space, sampler, storage, group.tag, attrs,
                                     spec.search.metric, spec.search.mode))


def _scheduler(spec: SweepSpec, group: Group):
    """The group's own scheduler: FIFO, or ASHA on the query count of the group's budget."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if spec.search.scheduler != "asha":
        return FIFOScheduler()
    limit = group.budget.limit
    # max_t one past the budget: a setting that spends it all is not "stopped" at its last
    # checkpoint before it can report that it is done.
    return ASHAScheduler(time_attr="queries", max_t=limit + 1,
                         grace_period=max(1, int(spec.search.grace_fraction * limit)),
                         reduction_factor=spec.search.reduction_factor)


def _trial_costs(spec: SweepSpec, groups: list[Group]) -> list[tuple[float, float]] | None:
    """Each group's estimated device seconds and requests a trial (``sweep.tuning.cost``, on an
    A10G: only their ratios matter), or None where the cost model does not know the model or
    a data set."""
    from sweep.tuning.cost import DEVICES, Architecture, group_cost

    try:
        arch = Architecture.of(spec.model)
        costs = [group_cost(spec, g, arch, DEVICES["a10g"]) for g in groups]
    except ConfigError as exc:
        print(f"no priorities: {exc}; the trials' requests are served in arrival order")
        return None
    return [(c.gpu_s / max(1, c.trials), c.requests / max(1, c.trials)) for c in costs]


def start_ray(address: str | None = None, py_modules: list[str] | tuple[str, ...] = (), *,
              num_cpus: int | None = None, num_gpus: int | None = None,
              object_store_memory: int = 512 * 1024 * 1024) -> bool:
    """Join a cluster (``address``), or start a private local Ray, with ``num_cpus`` (default:
    this machine's), ``num_gpus`` (Ray's count) and ``object_store_memory``; returns whether it
    started one (False: Ray was running in this process, or joined).

    Both are authenticated (``sweep.tuning.auth``): the local Ray with a token of its own, made
    for it; a cluster with the user's ``RAY_AUTH_MODE``, ``token`` unless said otherwise. The
    token is what keeps others out of the local Ray: it is asked to use 127.0.0.1, but Ray 2.60
    binds its GCS and raylet to every interface all the same (seen here with ``ss -ltn``).

    ``HF_HUB_OFFLINE`` reaches every actor and trial through the job's runtime environment:
    on a cluster they would otherwise have the environment of the node's raylet, not this
    process's. The launcher sets it to 1 unless the user did. So do ``py_modules``, the
    plugins' files and packages (``sweep.spec.plugins``): Ray ships them to every node.

    Raises:
        ConfigError: the cluster asks for a token that this process does not have.
    """
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Tune's new console output prints tables on every run whatever ``verbose`` says;
    # the legacy reporter honours verbose=0. Progress is ours (tqdm).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # No TensorBoard/CSV/JSON loggers: results are ours, in Parquet.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    if ray.is_initialized():
        return False
    passed = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    runtime_env = {**({"env_vars": passed} if passed else {}),
                   **({"py_modules": list(py_modules)} if py_modules else {})} or None
    if address:
        mode = joined_mode()
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False,
                     runtime_env=runtime_env)
        except ray.exceptions.AuthenticationError as exc:
            raise ConfigError(
                f"the Ray cluster at {address} refused this process (RAY_AUTH_MODE={mode}: "
                f"{' '.join(str(exc).split())[:160]}); give it the cluster's token "
                "(RAY_AUTH_TOKEN_PATH, RAY_AUTH_TOKEN or ~/.ray/auth_token: docs/security.md), "
                "or RAY_AUTH_MODE=disabled for a Ray without authentication") from exc
        return False
    private_token()
    ray.init(num_cpus=num_cpus or os.cpu_count() or 1, num_gpus=num_gpus, include_dashboard=False,
             logging_level=logging.WARNING, _node_ip_address="127.0.0.1", log_to_driver=False,
             object_store_memory=object_store_memory, runtime_env=runtime_env)
    return True


def _checkpoint_store(results_dir: Path, key: Path):
    """The sweep's checkpoint store (``sweep.checkpoints``): an actor on the driver's node,
    which signs and checks the checkpoints with this user's key, the file ``key`` there."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(CheckpointStore).options(num_cpus=0, scheduling_strategy=here).remote(
        str(results_dir.resolve()), str(key))


#: Where each oracle actor runs, written beside the results when they start, and what each
#: did, at the end of the sweep.
ACTOR_REPORT = ACTORS_FILE


def _write_actor_report(pool: OraclePool, path: Path) -> None:
    """Each actor's place, requests, forwards, device cache and queueing delays
    (``ServerBase``)."""
    import ray

    pool.refresh()  # the replacements of actors gone for good
    reports = []
    for actor in pool.actors:
        try:
            reports.append({**ray.get(actor.place.remote()), **ray.get(actor.memory.remote()),
                            **ray.get(actor.queueing.remote())})
        except ray.exceptions.RayActorError as exc:  # died since its last request: say so
            reports.append({"error": str(exc).strip().splitlines()[0]})
    path.write_text(json.dumps({"actors": reports}, indent=1) + "\n")


def run_sweep(spec: SweepSpec, *, address: str | None = None, resume: bool = False,
              results_root: str | Path = "results", progress: bool = True,
              server: type = OracleServer) -> Path:
    """Run the sweep of ``spec`` to completion; returns its results folder.

    ``server`` is the oracle actors' class (a stand-in whose ``needs_data`` is false,
    like ``bench.cluster``'s simulated GPUs, skips the check of the data and images).

    Raises:
        ConfigError, DataError, ModelError: bad input (results to overwrite, a data
            root, an image of a few-shot draw, the model, a checkpoint key that will not
            do), before anything is written or Ray starts; a cluster that refuses this
            process (no token).
        ResultsError: the results folder cannot be created or written in (before Ray
            starts), or a part file cannot be written: the sweep stops, leaving the
            parts already written whole and no partial one.
    """
    import optuna
    import ray
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    from sweep.tuning.studies import open_storage, prepare_studies, record_repairs

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    plan = plan_sweep(spec, results_root, resume)
    if plan.groups and getattr(server, "needs_data", True):
        check_inputs(spec, progress)  # before anything is removed, written or started
    if resume and plan.state is not None:
        print(plan.state.summary())
        remove_incomplete(plan.results_dir, plan.state.incomplete)
        for sample_id in plan.stale_checkpoints:
            remove_checkpoint(plan.results_dir, sample_id)
    # No studies of an earlier sweep in a fresh one; a resumed one's rebuilt from its tables.
    prepare_studies(plan, resume)
    print(plan.describe())
    if not plan.groups:
        return plan.results_dir
    if spec.plugins and ray.is_initialized():
        raise ConfigError(
            f"the sweep's plugins ({', '.join(p.source for p in spec.plugins)}) reach the other "
            "processes through the runtime environment of the Ray job it starts or joins: run "
            "it where no Ray is running in the process yet")
    key = key_file()  # the checkpoints' key (made on first use): one that will not do fails
    load_key(key, create=True)  # here, before Ray starts
    writer = ResultsWriter(Path(results_root), spec.name, plan.param_types)
    try:  # [tracking]: a tracker not installed fails here; nothing is written before a row
        trackers = open_trackers(spec.tracking, spec.name, plan.results_dir, tqdm.write)
    except ConfigError:
        writer.remove_if_empty()
        raise
    started_here = start_ray(address, tuple(p.path for p in spec.plugins))
    gpus = spec.actor_gpus
    try:  # a GPU request the cluster can never meet fails here, before any wait
        print(check_gpus(gpus, spec.resources.actors, capacity(started_here, address),
                         spec.actor_gpus_source))
    except ConfigError:
        writer.remove_if_empty()
        raise
    on_disk = tuple((d, spec.data.root) for d in spec.data.datasets if DATASETS[d].needs_root)
    pool = OraclePool(spec.model, spec.resources.actors,
                      gpus_per_actor=gpus, cpus_per_actor=spec.resources.cpus_per_actor,
                      pixel_folder=spec.data.cache, cache_bytes=spec.resources.cache_bytes,
                      actors_per_task=spec.resources.actors_per_task,
                      merge_wait_s=spec.resources.merge_wait_ms / 1000, server=server,
                      unavailable_timeout_s=spec.resources.placement_timeout_s, tasks=on_disk)
    try:
        places = pool.wait_started(spec.resources.placement_timeout_s)
    except PlacementError:
        writer.remove_if_empty()  # a launch that never started leaves no results folder
        raise
    except ActorSetupError as exc:  # kept with the results: the sweep is there to resume
        path, tail = keep_log(plan.results_dir, "actor-setup", f"{exc}\n\n{exc.details}")
        print(f"an oracle actor could not be set up; the last lines of its log ({path}):\n{tail}")
        raise
    print(f"oracle actors started: {describe_actors(places)}")
    # For the report: the description and metric, and where the actors run.
    write_info(plan.results_dir, SweepInfo.of(spec))
    (plan.results_dir / ACTOR_REPORT).write_text(json.dumps({"actors": places}, indent=1) + "\n")
    store = _checkpoint_store(plan.results_dir, key)
    # The studies' storage (optuna.db), where some group samples its settings.
    storage = (open_storage(plan.results_dir) if any(
        not g.sample_id and not g.space.samples_nothing for g in plan.groups) else None)
    bar = tqdm(total=plan.trials, desc="trials", unit="trial", disable=not progress)
    counters = {"queries": 0, "best_val": float("-inf"), "failed": 0, "rows": 0,
                "first_error": None}
    callback = ResultsCallback(writer, spec, plan.groups, bar, counters, trackers)
    costs = _trial_costs(spec, plan.groups)
    # A trial's requests run one after another, each waiting its turn at the actors: under a
    # shared pool its length grows with its chain of requests more than with their size. The
    # actors serve longer chains first, so the trial that would end last is not held back at
    # every request (measured in bench.cluster; docs/performance.md).
    chains = [0.0] * len(plan.groups) if costs is None else [chain for _, chain in costs]
    context = {"pool": pool, "store": store, "groups": [
        (TrialSetting(g.method, {}, g.dataset, spec.data.root, g.shots, g.seeds,
                      g.budget.to_budget_spec(), g.budget.checkpoints,
                      SWEEP_METHODS.version(g.method), levels=g.budget.levels,
                      per_budget=g.per_budget, priority=chain,
                      plugins=tuple(p.module for p in spec.plugins)), dict(g.space.fixed),
         (g.tag, g.sample_id))
        for g, chain in zip(plan.groups, chains)]}
    try:
        # One Tune run for every group: concurrency trials in flight until the whole plan is
        # done, each group with its own study and scheduler (sweep.tuning.groups).
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(tune_trainable, context=context), {"cpu": 1}),
            tune_config=tune.TuneConfig(metric=spec.search.metric, mode=spec.search.mode,
                                        search_alg=GroupedSearcher(
                                            [_source(spec, g, storage) for g in plan.groups],
                                            spec.search.metric, spec.search.mode,
                                            None if costs is None else [d for d, _ in costs]),
                                        scheduler=GroupedScheduler(
                                            [_scheduler(spec, g) for g in plan.groups]),
                                        num_samples=sum(g.samples for g in plan.groups),
                                        max_concurrent_trials=spec.resources.concurrency,
                                        # a trial worker imports torch once, not once per trial
                                        reuse_actors=True),
            run_config=tune.RunConfig(
                name=spec.name, storage_path=str(plan.results_dir.resolve() / ".tune"), verbose=0,
                stop=stop_on_error(callback),
                # A trial whose process is lost starts again, and goes on from its checkpoint.
                failure_config=tune.FailureConfig(max_failures=spec.resources.trial_restarts),
                # Tune's JSON log only, which its result grid reads back; the tables are ours.
                callbacks=[tune_callback(callback), JsonLoggerCallback()]),
        )
        tuner.fit()
        if callback.error is not None:
            raise callback.error
        record_repairs(plan, storage)
        _write_actor_report(pool, plan.results_dir / ACTOR_REPORT)
    finally:
        bar.close()
        pool.shutdown()
        ray.kill(store)
        if trackers is not None:  # the runs handed over are logged before the launch ends
            trackers.close()
    print(f"done: {plan.trials} trials, {counters['failed']} failed, {counters['queries']:,} queries; "
          f"results in {plan.results_dir}")
    if counters["rows"] and counters["failed"] == counters["rows"]:
        raise SweepFailedError(
            f"every one of the sweep's {counters['rows']} trials failed (first: "
            f"{counters['first_error']}); their rows are in {plan.results_dir}, their logs in "
            f"{plan.results_dir / LOGS}")
    return plan.results_dir


class SweepFailedError(PromptTuningError, RuntimeError):
    """Every trial of the sweep failed: its rows hold the errors, its logs the tracebacks."""
