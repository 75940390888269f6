"""A trial: one method, one hyperparameter setting, all the sweep's seeds in lockstep.

Each seed is its own run (its own few-shot draw, oracle budget, projection
and method seed) and its own row in the results. The seeds advance together
from checkpoint to checkpoint so that each report to Ray Tune carries the
mean validation accuracy over seeds at the same query count, the time axis
of ASHA. Selection uses validation accuracy only.

``run_setting`` is plain Python (no Ray) and yields one report per
checkpoint; ``tune_trainable`` is the Ray Tune function around it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import methods
from sweep.budget import BudgetSpec, CheckpointRecord
from sweep.data import few_shot, load_dataset
from sweep.oracle import OraclePool, TaskKey
from sweep.results import TrialOutcome
from sweep.run import PromptObjective, RunResult, assemble, iter_run, layout_of
from sweep.spec import ModelSpec
from sweep.tuning.groups import GROUP, SAMPLE

__all__ = ["SeedOutcome", "TrialSetting", "run_setting", "tune_trainable"]


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


@dataclass
class SeedOutcome:
    """How one seed of a trial went: its checkpoints, and how it ended."""

    seed: int
    records: list[CheckpointRecord] = field(default_factory=list)
    status: str = "running"  # running | ok | failed
    error: str | None = None
    result: RunResult | None = None
    device: str = ""
    started_at: float = field(default_factory=time.time)
    #: when the seed's run ended (None: still running); its setup (oracle, method) counts.
    ended_at: float | None = None
    objective: PromptObjective | None = field(default=None, repr=False)

    @property
    def nonfinite_losses(self) -> int:
        """Losses the objective ranked worst because they were NaN or infinite."""
        return 0 if self.objective is None else self.objective.nonfinite_losses

    def report(self) -> TrialOutcome:
        """What the driver is told of this seed (plain data, ``TrialOutcome.to_dict``)."""
        result = self.result
        return TrialOutcome(
            seed=self.seed, status=self.status, error=self.error, device=self.device,
            started_at=self.started_at, checkpoints=tuple(self.records),
            stop_reasons={} if result is None else {k: str(v) for k, v in result.stop_reasons.items()},
            nonfinite_losses=self.nonfinite_losses,
            # the trial's own time, setup included: started_at + wall_s is when it ended
            wall_s=None if result is None or self.ended_at is None
            else self.ended_at - self.started_at)


def _start(setting: TrialSetting, seed: int, pool: OraclePool | None):
    config = methods.REGISTRY.make_config(setting.method, setting.params)
    layout = layout_of(config)
    key = TaskKey(setting.dataset, setting.data_root, setting.shots, seed)
    if pool is not None:
        oracle = pool.oracle(key, layout, setting.budget)
    else:  # local: for tests and single-process use
        from sweep.oracle import ClipOracle, load_model

        task = few_shot(load_dataset(setting.dataset, setting.data_root), setting.shots, seed)
        oracle = ClipOracle(load_model(ModelSpec()), task, layout, setting.budget)
    run = assemble(setting.method, config, oracle, seed)
    device = f"{oracle.device} ({oracle.precision})"
    return iter_run(run.method, run.objective, run.scorer, setting.checkpoints), device, run.objective


def run_setting(setting: TrialSetting, pool: OraclePool | None = None
                ) -> Iterator[tuple[int, list[SeedOutcome]]]:
    """Run every seed of ``setting``; yield (checkpoint index, outcomes) at each checkpoint.

    A seed that raises is marked failed with its error and the others go on.
    The last yield has every outcome finished (ok or failed).
    """
    outcomes = [SeedOutcome(seed) for seed in setting.seeds]
    runs: dict[int, Iterator[CheckpointRecord]] = {}
    for out in outcomes:
        try:
            runs[out.seed], out.device, out.objective = _start(setting, out.seed, pool)
        except Exception as exc:  # a bad setting or a lost actor: a failed row, not a crash
            _fail(out, exc)
    if not runs:
        # Every seed failed to start. One report all the same: Ray Tune fails the whole
        # sweep when a trial ends without reporting its metric.
        yield 0, outcomes
        return
    checkpoint = 0
    while runs:
        for out in outcomes:
            run = runs.get(out.seed)
            if run is None:
                continue
            try:
                out.records.append(next(run))
            except StopIteration as done:
                out.result, out.status, out.ended_at = done.value, "ok", time.time()
                del runs[out.seed]
            except Exception as exc:
                _fail(out, exc)
                del runs[out.seed]
        yield checkpoint, outcomes
        checkpoint += 1


def _fail(out: SeedOutcome, exc: BaseException) -> None:
    out.status = "failed"
    out.error = f"{type(exc).__name__}: {exc}"
    out.result = None


def summary(outcomes: list[SeedOutcome], unit: str) -> dict[str, float]:
    """Mean over seeds of each seed's latest checkpoint: what Ray Tune sees."""
    latest = [o.records[-1] for o in outcomes if o.records]
    if not latest:
        return {"val_acc": float("nan"), "test_acc": float("nan"), "queries": 0}
    return {
        "val_acc": float(np.mean([r.val_acc for r in latest])),
        "test_acc": float(np.mean([r.test_acc for r in latest])),
        "queries": int(max(r.queries[unit] for r in latest)),
    }


def tune_trainable(config: dict[str, Any], *, context: dict[str, Any]) -> None:
    """The Ray Tune function: ``config`` is the sampled setting, ``context`` the sweep's constants.

    ``context`` holds ``pool`` (an OraclePool) and ``groups``: per group of the plan, a
    TrialSetting without params and the group's fixed hyperparameters; ``config``
    names its group (``GROUP``). Every report carries the trial's per-seed outcomes;
    the driver's callback writes them.
    """
    from ray import tune

    base, fixed = context["groups"][config[GROUP]]
    params = {**fixed, **{k: v for k, v in config.items() if k not in (GROUP, SAMPLE)}}
    setting = TrialSetting(base.method, params, base.dataset, base.data_root, base.shots,
                           base.seeds, base.budget, base.checkpoints)
    unit = setting.budget.unit
    for checkpoint, outcomes in run_setting(setting, context["pool"]):
        metrics = summary(outcomes, unit)
        done = all(o.status != "running" for o in outcomes)
        report = {**metrics, "checkpoint": checkpoint, "done": done,
                  "outcomes": [o.report().to_dict() for o in outcomes]}
        if math.isnan(report["val_acc"]):
            report["val_acc"] = -1.0  # every seed failed: worst for the searcher, never selected
        tune.report(report)
