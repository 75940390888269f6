"""The ask/evaluate/tell loop, written once for every method, with budget checkpoints.

The loop asks the objective (never the method) whether the next ask fits the
budget, so a method cannot overspend; the oracle refuses anyway. At each
checkpoint of the budget the recommended point is scored on validation and
test through the evaluation channel (never counted, never used by the method).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from methods.base import Evaluation, Method
from methods.errors import BudgetExceededError
from sweep.budget import CheckpointRecord, QueryCounts, checkpoint_schedule
from sweep.run.objective import Objective

__all__ = ["LoopState", "RunResult", "SplitScorer", "iter_run", "run_method", "start_loop"]


@dataclass
class RunResult:
    checkpoints: list[CheckpointRecord]
    stop_reasons: dict[str, Any]
    used: QueryCounts
    recommendation: np.ndarray
    wall_s: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoopState:
    """Where a run stands between two asks: with the method and the objective's state, all a
    run needs to go on from a budget checkpoint (``sweep.checkpoints``)."""

    #: budget levels (in the budget's unit) of the checkpoints still to come.
    levels: list[int]
    records: list[CheckpointRecord] = field(default_factory=list)
    last_loss: float = float("nan")
    #: seconds the run had taken when it was last checkpointed (its records' clock goes on).
    elapsed: float = 0.0


def start_loop(method: Method, objective: Objective, checkpoints: int = 8,
               levels: tuple[int, ...] = ()) -> LoopState:
    """A fresh run's state: the method told how many asks the budget allows, the checkpoints'
    levels; ``levels`` (budget levels of a sweep's ``limits``) add a checkpoint at the last
    ask within each, so that the run's curve is read there exactly."""
    unit, limit = objective.budget.unit, objective.budget.limit
    per_ask = objective.cost(method.ask_size, method.minibatch)[unit] if method.ask_size else 0
    per_epoch = max(1, objective.meter.images // method.minibatch) if method.minibatch else None
    method.plan(None if limit is None or per_ask == 0 else (limit - objective.used[unit]) // per_ask,
                steps_per_epoch=per_epoch)
    if limit is None:
        return LoopState([])
    schedule = set(checkpoint_schedule(limit, per_ask, checkpoints))
    schedule |= {level // per_ask * per_ask if per_ask else level for level in levels
                 if level <= limit and level >= per_ask}
    return LoopState(sorted(schedule))


class SplitScorer:
    """Scores a recommended point on validation and test (the evaluation channel).

    ``evaluate(split, z, features)`` is the objective's channel; ``zero_shot(split)``
    the oracle's template evaluation, used for methods flagged ``zero_shot``. What is
    scored is what the method deploys: the prompt, or for methods that train on features
    its logits through ``predict`` (an adapter's, a cache's).
    """

    def __init__(self, evaluate: Callable[[str, np.ndarray, bool], Evaluation],
                 zero_shot: Callable[[str], Evaluation] | None = None) -> None:
        self._evaluate = evaluate
        self._zero_shot = zero_shot

    def __call__(self, method: Method, z: np.ndarray) -> tuple[float, float, float]:
        """(validation accuracy, test accuracy, validation loss) of ``z``."""
        val_acc, val_loss = self.measure(method, z, "val")
        return val_acc, self.score(method, z, "test"), val_loss

    def score(self, method: Method, z: np.ndarray, split: str) -> float:
        """The accuracy of ``z`` on ``split``."""
        return self.measure(method, z, split)[0]

    def measure(self, method: Method, z: np.ndarray, split: str) -> tuple[float, float]:
        """(accuracy, mean cross-entropy loss) of ``z`` on ``split``."""
        if getattr(method, "zero_shot", False):
            if self._zero_shot is None:
                return float("nan"), float("nan")
            ev = self._zero_shot(split)
            return float(ev.accuracies[0]), float(ev.losses[0])
        if not method.needs_features:
            ev = self._evaluate(split, z, False)
            return float(ev.accuracies[0]), float(ev.losses[0])
        ev = self._evaluate(split, z, True)
        logits = np.asarray(method.predict(ev), dtype=np.float64)
        labels = np.asarray(ev.labels)
        return float(np.mean(np.argmax(logits, axis=-1) == labels)), _cross_entropy(logits, labels)


def _cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """The mean cross-entropy of (m, C) ``logits`` at ``labels``, as the oracle's losses are."""
    top = logits.max(axis=-1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(logits - top).sum(axis=-1))
    return float(np.mean(log_z - logits[np.arange(len(labels)), labels]))


def iter_run(method: Method, objective: Objective, scorer: SplitScorer | None = None,
             checkpoints: int = 8, state: LoopState | None = None) -> Iterator[CheckpointRecord]:
    """Run ``method`` against ``objective``, yielding a record at each budget checkpoint.

    The generator's return value (``StopIteration.value``) is the RunResult;
    ``run_method`` collects it. A trial steps several seeds in lockstep with it.

    Args:
        method: a fresh method, or the method of ``state``.
        objective: evaluates points and owns the budget.
        scorer: scores the recommendation at checkpoints: (val accuracy, test accuracy,
            val loss), as ``SplitScorer`` does (None: nan).
        checkpoints: number of budget checkpoints (the last is 100%, or the stop).
        state: where the run stands (``start_loop``; None: a fresh start). It is kept up to
            date: at each yield, the method, the objective's state and ``state`` are what a
            run needs to go on from there.
    """
    if state is None:
        state = start_loop(method, objective, checkpoints)
    start = time.perf_counter() - state.elapsed
    unit, limit = objective.budget.unit, objective.budget.limit
    levels, records = state.levels, state.records

    def record() -> CheckpointRecord:
        z = method.recommend()
        nan = float("nan")
        val, test, val_loss = scorer(method, z) if scorer else (nan, nan, nan)
        state.elapsed = time.perf_counter() - start
        rec = CheckpointRecord(len(records), objective.used, state.last_loss, val, test,
                               state.elapsed, val_loss)
        records.append(rec)
        return rec

    reasons: dict[str, Any] = {}
    while True:
        reasons = method.stop()
        if reasons:
            break
        n, minibatch = method.ask_size, method.minibatch
        if n == 0:
            reasons = {"no_queries": "the method asks for nothing"}
            break
        if not objective.meter.fits(objective.cost(n, minibatch)):
            reasons = {"budget": f"{objective.used[unit]} of {limit} {unit} used; "
                                 f"the next ask needs {objective.cost(n, minibatch)[unit]}"}
            break
        z = method.ask()
        # Passed only when asked for: an objective without augmented views need not know it.
        fresh = {"fresh_views": True} if method.fresh_views else {}
        evaluation = objective(z, minibatch=minibatch, features=method.needs_features,
                               gradient=method.needs_gradient, **fresh)
        method.tell(z, evaluation)
        state.last_loss = float(np.min(evaluation.losses))
        point = method.dev_point()
        if point is not None:  # the method's own selection draw (BBT's dev set), in the budget
            try:
                dev = objective.dev(point[None])
            except BudgetExceededError:
                pass  # what is left of the budget does not pay for it: the point goes unscored
            else:
                method.tell_dev(point, float(dev.accuracies[0]))
        used = objective.used[unit]
        if levels and used >= levels[0]:
            while levels and used >= levels[0]:
                levels.pop(0)
            yield record()
    if not records or records[-1].queries != objective.used:
        yield record()
    return RunResult(records, reasons, objective.used, method.recommend(),
                     time.perf_counter() - start)


def run_method(method: Method, objective: Objective, scorer: SplitScorer | None = None,
               checkpoints: int = 8,
               on_checkpoint: Callable[[CheckpointRecord], None] | None = None) -> RunResult:
    """Run ``method`` to its budget or stop (see ``iter_run``); ``on_checkpoint`` sees each record."""
    run = iter_run(method, objective, scorer, checkpoints)
    while True:
        try:
            rec = next(run)
        except StopIteration as done:
            return done.value
        if on_checkpoint:
            on_checkpoint(rec)
