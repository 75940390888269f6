"""A trial: one method, one hyperparameter setting, all the sweep's seeds in lockstep.

Each seed is its own run (its own few-shot draw, oracle budget, projection
and method seed) and its own row in the results; with ``[budget] limits``, a
method planned from its budget (``PromptConfig.planned_from_budget``) runs
each seed once per level, each run its own row. The seeds advance together
from checkpoint to checkpoint so that each report to Ray Tune carries the
mean validation accuracy and loss over seeds at the same query count, the
time axis of ASHA. Selection uses the validation split only.

``run_setting`` is plain Python (no Ray) and yields one report per
checkpoint; ``tune_trainable`` is the Ray Tune function around it; its reports carry the
mean over seeds of ``val_acc`` and ``val_loss``, either of which the sweep's
``[search] metric`` selects by. At each
checkpoint the trial's state (``TrialState``) goes to the sweep's checkpoint
store (``sweep.checkpoints``), and a trial that finds a checkpoint of its
setting goes on from there: the same final result as a run never stopped
(with merging off), its query counts those of that run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import time
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sweep.budget import BudgetSpec, CheckpointRecord
from sweep.data import few_shot, load_dataset
from sweep.errors import ConfigError
from sweep.oracle import ActorSetupError, OraclePool, TaskKey
from sweep.results import TrialOutcome
from sweep.run import LoopState, PromptObjective, RunResult, assemble, iter_run, layout_of, start_loop
from sweep.spec import SWEEP_METHODS, ModelSpec, activate
from sweep.tuning.groups import GROUP, SAMPLE

__all__ = ["UNMEASURED", "SeedOutcome", "TrialSetting", "TrialState", "run_setting",
           "sample_id_of", "tune_trainable"]


@dataclass(frozen=True)
class TrialSetting:
    """What one trial runs."""

    method: str
    params: dict[str, Any]  # hyperparameters (sampled and fixed), validated by the registry
    dataset: str
    data_root: str | None
    shots: int
    seeds: tuple[int, ...]
    budget: BudgetSpec
    checkpoints: int = 8
    #: the method's version (``methods.MethodSpec.version``) the trial runs.
    method_version: int = 1
    #: the sweep's budget levels (``[budget] limits``, in queries, the last the budget's limit):
    #: with ``per_budget``, each seed runs once per level, planned for it; every run gets a
    #: checkpoint at each level within its budget. () for none.
    levels: tuple[int, ...] = ()
    per_budget: bool = False
    #: sent with the trial's requests: the actors serve higher priorities first (the driver's
    #: estimate of the trial's chain of requests; a scheduling hint that changes no result).
    priority: float = 0.0
    #: the plugin modules the trial imports before it makes its method (``sweep.spec.activate``:
    #: Ray's runtime environment ships them).
    plugins: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The setting as plain data (JSON's types): what a checkpoint's header holds."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialSetting:
        """The setting ``to_dict`` gave (TypeError, ValueError or ConfigError for another)."""
        return cls(**{**data, "budget": BudgetSpec(**data["budget"]), "seeds": tuple(data["seeds"]),
                      "levels": tuple(data["levels"])})


@dataclass
class SeedOutcome:
    """How one seed of a trial went (at one budget level, with ``per_budget``): its
    checkpoints, and how it ended."""

    seed: int
    #: the run's own budget (a level of ``TrialSetting.levels``); None: the setting's.
    budget: int | None = None
    records: list[CheckpointRecord] = field(default_factory=list)
    status: str = "running"  # running | ok | failed
    error: str | None = None
    #: a failed seed's traceback (the actor's too, where it failed there): the sweep's logs.
    log: str = ""
    #: failed because an oracle actor could not be set up on its node: the sweep stops.
    fatal: bool = False
    result: RunResult | None = None
    device: str = ""
    started_at: float = field(default_factory=time.time)
    #: when the seed's run ended (None: still running); its setup (oracle, method) counts.
    ended_at: float | None = None
    #: how often the trial went on from a checkpoint after its process was lost.
    restarts: int = 0
    objective: PromptObjective | None = field(default=None, repr=False)
    # A running seed's method and loop: with the objective's state, what a checkpoint keeps.
    method: Any = field(default=None, repr=False)
    loop: LoopState | None = field(default=None, repr=False)
    objective_state: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def nonfinite_losses(self) -> int:
        """Losses the objective ranked worst because they were NaN or infinite."""
        if self.objective is None:
            return 0 if self.objective_state is None else self.objective_state["nonfinite_losses"]
        return self.objective.nonfinite_losses

    def saved(self) -> SeedOutcome:
        """A copy for a checkpoint: the objective (with its oracle) replaced by its state."""
        state = self.objective.state() if self.objective is not None else self.objective_state
        running = self.status == "running"
        return dataclasses.replace(self, objective=None, objective_state=state,
                                   method=self.method if running else None,
                                   loop=self.loop if running else None)

    def report(self) -> TrialOutcome:
        """What the driver is told of this seed (plain data, ``TrialOutcome.to_dict``)."""
        result = self.result
        return TrialOutcome(
            seed=self.seed, status=self.status, error=self.error, device=self.device,
            started_at=self.started_at, checkpoints=tuple(self.records),
            stop_reasons={} if result is None else {k: str(v) for k, v in result.stop_reasons.items()},
            nonfinite_losses=self.nonfinite_losses, restarts=self.restarts,
            log=self.log or None, fatal=self.fatal,
            # the trial's own time, setup included: started_at + wall_s is when it ended
            wall_s=None if result is None or self.ended_at is None
            else self.ended_at - self.started_at, budget=self.budget)


@dataclass
class TrialState:
    """A trial at a budget checkpoint: what the checkpoint store keeps, and a trial resumes from."""

    setting: TrialSetting
    #: the index of the trial's next report.
    checkpoint: int
    #: each seed's outcome so far, with a running seed's method, loop and objective state.
    outcomes: list[SeedOutcome]

    def header(self) -> dict[str, Any]:
        """What the checkpoint says of itself in plain data, readable without unpickling."""
        return {"setting": self.setting.to_dict(), "checkpoint": self.checkpoint}

    def to_bytes(self) -> bytes:
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def loadable(blob: bytes, sample_id: str) -> TrialState | None:
        """``from_bytes``, or None (with a warning in the trial's log) where a class the
        checkpoint names no longer exists under its name: promptsweep renamed or moved it
        (its methods' classes in issue 25), or a plugin did. Such a checkpoint is stale, and
        its setting starts over from its first query."""
        try:
            return TrialState.from_bytes(blob)
        except (AttributeError, ImportError) as exc:
            warnings.warn(f"the checkpoint of {sample_id} names a class that no longer exists "
                          f"({type(exc).__name__}: {exc}); its setting starts over",
                          stacklevel=2)
            return None

    @staticmethod
    def from_bytes(blob: bytes) -> TrialState:
        """Only for bytes whose signature the checkpoint store checked (``sweep.checkpoints``):
        unpickling runs the code a pickle names."""
        return pickle.loads(blob)  # noqa: S301 - this user's own, signed checkpoint


def _start(setting: TrialSetting, out: SeedOutcome, pool: OraclePool | None):
    """Seed ``out``'s run: fresh, or from its checkpointed method, loop and objective state."""
    config = SWEEP_METHODS.make_config(setting.method, setting.params)
    layout = layout_of(config)
    key = TaskKey(setting.dataset, setting.data_root, setting.shots, out.seed)
    budget = (setting.budget if out.budget is None
              else dataclasses.replace(setting.budget, limit=out.budget))
    if pool is not None:
        oracle = pool.oracle(key, layout, budget, setting.priority)
    else:  # local: for tests and single-process use
        from sweep.oracle import ClipOracle, load_model

        task = few_shot(load_dataset(setting.dataset, setting.data_root), setting.shots, out.seed)
        oracle = ClipOracle(load_model(ModelSpec()), task, layout, budget, glass_box=True)
    run = assemble(setting.method, config, oracle, out.seed, out.method)
    if out.loop is None:
        # A checkpoint at each level within the run's budget: a run planned for a larger
        # level can be read there too, the two ways compared (``bench.suite``).
        out.method, out.loop = run.method, start_loop(run.method, run.objective,
                                                      setting.checkpoints, setting.levels)
    else:
        run.objective.restore(out.objective_state)
    out.device = f"{oracle.device} ({oracle.precision})"
    out.objective, out.objective_state = run.objective, None
    return iter_run(out.method, run.objective, run.scorer, setting.checkpoints, out.loop)


def run_setting(setting: TrialSetting, pool: OraclePool | None = None,
                resume: TrialState | None = None) -> Iterator[tuple[int, list[SeedOutcome]]]:
    """Run every seed of ``setting``, or go on from ``resume``; yield (checkpoint index,
    outcomes) at each checkpoint (``TrialState(setting, index + 1, [o.saved() for o in
    outcomes])`` is the trial's state there).

    A seed that raises is marked failed with its error and the others go on.
    The last yield has every outcome finished (ok or failed).
    """
    if resume is None:
        outcomes = ([SeedOutcome(seed, level) for seed in setting.seeds for level in setting.levels]
                    if setting.per_budget else [SeedOutcome(seed) for seed in setting.seeds])
        checkpoint = 0
    else:
        outcomes, checkpoint = resume.outcomes, resume.checkpoint
        for out in outcomes:
            out.restarts += 1
    runs: dict[int, Iterator[CheckpointRecord]] = {}  # by the outcome's index
    for i, out in enumerate(outcomes):
        if out.status != "running":
            continue
        try:
            runs[i] = _start(setting, out, pool)
        except Exception as exc:  # a bad setting or a lost actor: a failed row, not a crash
            _fail(out, exc)
    if not runs:
        # Every seed failed to start (or had ended). One report all the same: Ray Tune
        # fails the whole sweep when a trial ends without reporting its metric.
        yield checkpoint, outcomes
        return
    while runs:
        for i, out in enumerate(outcomes):
            run = runs.get(i)
            if run is None:
                continue
            try:
                out.records.append(next(run))
            except StopIteration as done:
                out.result, out.status, out.ended_at = done.value, "ok", time.time()
                out.method = out.loop = None
                del runs[i]
            except Exception as exc:
                _fail(out, exc)
                del runs[i]
        yield checkpoint, outcomes
        checkpoint += 1


def _fail(out: SeedOutcome, exc: BaseException) -> None:
    out.status = "failed"
    out.error = f"{type(exc).__name__}: {exc}"
    out.log = "".join(traceback.format_exception(exc))
    if isinstance(exc, ActorSetupError):
        out.fatal = True
        out.log += f"\nOn the oracle actor:\n{exc.details}"
    out.result = out.method = out.loop = None


def summary(outcomes: list[SeedOutcome], unit: str) -> dict[str, float]:
    """Mean over seeds of each seed's latest checkpoint at the full budget: what Ray Tune sees
    (runs for a smaller budget level are reported in the rows only)."""
    full = max((o.budget for o in outcomes if o.budget is not None), default=None)
    latest = [o.records[-1] for o in outcomes if o.records and o.budget in (None, full)]
    if not latest:
        return {"val_acc": float("nan"), "val_loss": float("nan"), "test_acc": float("nan"),
                "queries": 0}
    return {
        "val_acc": float(np.mean([r.val_acc for r in latest])),
        "val_loss": float(np.mean([r.val_loss for r in latest])),
        "test_acc": float(np.mean([r.test_acc for r in latest])),
        "queries": int(max(r.queries[unit] for r in latest)),
    }


#: What a trial reports for a selection metric no seed measured (every one failed): the worst
#: value for ASHA, never selected.
UNMEASURED = {"val_acc": -1.0, "val_loss": float("inf")}


def tune_trainable(config: dict[str, Any], *, context: dict[str, Any]) -> None:
    """The Ray Tune function: ``config`` is the sampled setting, ``context`` the sweep's constants.

    ``context`` holds ``pool`` (an OraclePool), ``store`` (the sweep's CheckpointStore
    actor, or None) and ``groups``: per group of the plan, a TrialSetting without params,
    the group's fixed hyperparameters and its ``(tag, sample_id)`` (``sample_id_of``);
    ``config`` names its group (``GROUP``). Every report carries the trial's per-seed
    outcomes; the driver's callback writes them.
    """
    import ray
    from ray import tune

    base, fixed, (tag, repair) = context["groups"][config[GROUP]]
    activate(base.plugins)
    params = {**fixed, **{k: v for k, v in config.items() if k not in (GROUP, SAMPLE)}}
    setting = dataclasses.replace(base, params=params)
    unit = setting.budget.unit
    store, sample_id = context.get("store"), sample_id_of(tag, repair, config)
    # The store checks the checkpoint's signature before it hands it out; its setting is
    # compared before anything is unpickled.
    found = None if store is None else ray.get(store.get.remote(sample_id))
    resume = None
    if found is not None:
        header, blob = found
        if header.get("setting") != setting.to_dict():
            raise ConfigError(f"the checkpoint of {sample_id} was made for another setting "
                              f"({header.get('setting')}); remove it to start the setting over")
        resume = TrialState.loadable(blob, sample_id)
    for checkpoint, outcomes in run_setting(setting, context["pool"], resume):
        metrics = summary(outcomes, unit)
        done = all(o.status != "running" for o in outcomes)
        if store is not None and not done:  # kept before it is reported: never behind a report
            state = TrialState(setting, checkpoint + 1, [o.saved() for o in outcomes])
            ray.get(store.put.remote(sample_id, state.header(), state.to_bytes()))
        report = {**metrics, "checkpoint": checkpoint, "done": done,
                  "outcomes": [o.report().to_dict() for o in outcomes]}
        for metric, worst in UNMEASURED.items():
            if math.isnan(report[metric]):
                # every seed failed: worst for ASHA, never selected; FAIL in the group's study
                report[metric] = worst
        tune.report(report)


def sample_id_of(tag: str, repair: str | None, config: dict[str, Any]) -> str:
    """The id of a trial's setting: a repair's own, else its group's tag and its index there."""
    return repair or f"{tag}-{config[SAMPLE]:03d}"
