"""One trial as the driver saw it, and the plain data a trial worker sends the driver.

A worker reports each seed's ``TrialOutcome`` as plain data (``to_dict``; it
crosses to the driver in a Ray Tune report, which Tune also logs as JSON);
the driver reads it back (``from_dict``) and adds the trial's identity
(``TrialRecord.from_outcome``); the writer turns the ``TrialRecord`` into a
trials row and its curves rows. A checkpoint has one shape throughout,
``checkpoint_row`` and its inverse ``checkpoint_from_row``: the columns of
the curves table.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np

from sweep.budget import UNITS, CheckpointRecord, QueryCounts
from sweep.errors import ConfigError
from sweep.results.files import TRIAL_ID
from sweep.results.provenance import DISTRIBUTIONS, Provenance, canonical_json, config_hash
from sweep.results.schema import BUDGET_RUNS, STATUSES, query_column

if TYPE_CHECKING:
    from sweep.run import RunResult

__all__ = ["TrialOutcome", "TrialRecord", "checkpoint_from_row", "checkpoint_row", "seed_status"]


def _opt_float(x: float | None) -> float | None:
    # NaN means "not measured" in the loop (no scorer, no request yet): store it as
    # null so the tables have one notion of missing. inf is a measurement: kept.
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def _float(x: float | None) -> float:
    # The inverse of _opt_float: null is "not measured" again.
    return float("nan") if x is None else float(x)


def checkpoint_row(checkpoint: CheckpointRecord) -> dict[str, Any]:
    """A checkpoint as the curves table's columns (``checkpoint``, ``queries_*``, metrics, time)."""
    c = checkpoint
    return {"checkpoint": int(c.checkpoint), **{query_column(u): c.queries[u] for u in UNITS},
            "train_loss": _opt_float(c.train_loss), "val_acc": _opt_float(c.val_acc),
            "test_acc": _opt_float(c.test_acc), "wall_s": _opt_float(c.wall_s),
            "val_loss": _opt_float(c.val_loss)}


def checkpoint_from_row(row: Mapping[str, Any]) -> CheckpointRecord:
    """The inverse of ``checkpoint_row``.

    Raises:
        ConfigError: the row lacks a column.
    """
    try:
        return CheckpointRecord(
            checkpoint=int(row["checkpoint"]),
            queries=QueryCounts(*(int(row[query_column(u)]) for u in UNITS)),
            train_loss=_float(row["train_loss"]), val_acc=_float(row["val_acc"]),
            test_acc=_float(row["test_acc"]), wall_s=_float(row["wall_s"]),
            # absent from parts before schema version 5
            val_loss=_float(row.get("val_loss")))
    except KeyError as exc:
        raise ConfigError(f"checkpoint row lacks {exc.args[0]!r}: {dict(row)}") from exc


@dataclass(frozen=True, kw_only=True)
class TrialOutcome:
    """How one seed of a trial went, as its worker reports it to the driver."""

    seed: int
    #: "running" (a report before the end), "ok" or "failed".
    status: str = "failed"
    error: str | None = None
    device: str | None = None
    #: epoch seconds (``time.time()`` in the worker); None: unknown.
    started_at: float | None = None
    checkpoints: tuple[CheckpointRecord, ...] = ()
    stop_reasons: Mapping[str, str] = field(default_factory=dict)
    nonfinite_losses: int = 0
    wall_s: float | None = None
    #: how often the trial went on from a budget checkpoint after its process was lost.
    restarts: int = 0
    #: the run's own budget where the trial runs its setting once per budget level
    #: (``[budget] limits``); None: the trial's budget.
    budget: int | None = None
    #: a failed seed's traceback, for the sweep's logs (not a column).
    log: str | None = None
    #: failed because an oracle actor could not be set up on its node: the sweep stops
    #: and writes no row for it (not a column).
    fatal: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-able): what crosses from the worker to the driver."""
        return {"seed": self.seed, "status": self.status, "error": self.error,
                "device": self.device, "started_at": self.started_at,
                "checkpoints": [checkpoint_row(c) for c in self.checkpoints],
                "stop_reasons": dict(self.stop_reasons),
                "nonfinite_losses": self.nonfinite_losses, "wall_s": self.wall_s,
                "restarts": self.restarts, "budget": self.budget, "log": self.log,
                "fatal": self.fatal}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialOutcome:
        """The inverse of ``to_dict``."""
        return cls(**{**data, "checkpoints": tuple(checkpoint_from_row(r)
                                                   for r in data.get("checkpoints", ()))})


def seed_status(outcome: str, trial_failed: bool = False) -> str:
    """The ``status`` of a seed's row whose outcome says ``outcome`` (``TrialOutcome.status``).

    A seed still running when its trial ended was stopped by the scheduler, unless the trial
    itself failed (``trial_failed``).
    """
    status = {"ok": "completed", "failed": "failed"}.get(outcome, "stopped")
    return "failed" if trial_failed and status != "completed" else status


def _plain(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x


def _coerce_param(name: str, value: Any, kind: str) -> Any:
    value = _plain(value)
    if value is None:
        return None
    ok = {
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "str": isinstance(value, str),
    }[kind]
    if not ok:
        raise ConfigError(f"hyperparameter {name!r} is declared {kind} but got "
                          f"{type(value).__name__} {value!r}")
    return float(value) if kind == "float" else value


@dataclass(frozen=True, kw_only=True)
class TrialRecord:
    """One trial as the driver saw it: identity, outcome, counts and the checkpoints.

    Build one with :meth:`from_run` (a finished run) or :meth:`from_failure`
    (an error, with the queries and checkpoints made so far); the writer turns
    it into one trials row (:meth:`trials_row`) and its curves rows
    (:meth:`curves_rows`). The metric columns are derived from the
    checkpoints, so the two tables cannot disagree.
    """

    trial_id: str
    sweep: str
    #: the hyperparameter setting shared by the seeds of one sample.
    sample_id: str
    method: str
    model: str
    dataset: str
    shots: int
    seed: int
    budget_unit: str
    #: the budget limit in ``budget_unit`` (None: unlimited).
    budget: int | None
    #: "curve" (the budget levels are read off this run) or "per-budget" (a run planned for
    #: ``budget`` alone, one of the sweep's ``[budget] limits``): ``BUDGET_RUNS``.
    budget_run: str = "curve"
    black_box: bool = True
    estimator: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    #: the method's version (``methods.MethodSpec.version``) the trial ran.
    method_version: int = 1
    #: sha256 of a plugin method's source files (``sweep.spec.plugins``); None for
    #: promptsweep's own methods, whose version says it all.
    method_digest: str | None = None
    status: str = "completed"
    error: str | None = None
    #: the oracle's own counts at the end of the trial (or at the failure).
    queries: QueryCounts = QueryCounts()
    checkpoints: Sequence[CheckpointRecord] = ()
    stop_reasons: Mapping[str, Any] = field(default_factory=dict)
    nonfinite_losses: int = 0
    #: how often the trial went on from a budget checkpoint after its process was lost (the
    #: queries its lost process made after that checkpoint were served again, counted once).
    restarts: int = 0
    wall_s: float | None = None
    device: str | None = None
    #: a timezone-aware datetime, or epoch seconds (``time.time()``).
    started_at: datetime | float = field(default_factory=lambda: datetime.now(timezone.utc))
    #: the resolved configuration of the trial (config_json, config_hash).
    config: Mapping[str, Any] = field(default_factory=dict)
    #: None: the writer's (the driver's) provenance.
    provenance: Provenance | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.trial_id, str) or not TRIAL_ID.match(self.trial_id):
            raise ConfigError(f"trial id {self.trial_id!r} must be letters, digits, '.', '_' or "
                              "'-' (it names the part files)")
        if self.status not in STATUSES:
            raise ConfigError(f"trial status must be one of {', '.join(STATUSES)}; "
                              f"got {self.status!r}")
        if self.status == "failed" and not self.error:
            raise ConfigError(f"failed trial {self.trial_id} needs an error message")
        if self.budget_run not in BUDGET_RUNS:
            raise ConfigError(f"budget_run must be one of {', '.join(BUDGET_RUNS)}; "
                              f"got {self.budget_run!r}")
        if self.budget_unit not in UNITS:
            raise ConfigError(f"budget unit must be one of {', '.join(UNITS)}; "
                              f"got {self.budget_unit!r}")
        if isinstance(self.started_at, (int, float)) and not isinstance(self.started_at, bool):
            # time.time() from a worker: seconds since the epoch, UTC by definition.
            object.__setattr__(self, "started_at",
                               datetime.fromtimestamp(self.started_at, timezone.utc))
        if not isinstance(self.started_at, datetime) or self.started_at.tzinfo is None:
            raise ConfigError("started_at must be a timezone-aware datetime or epoch seconds; "
                              f"got {self.started_at!r}")
        object.__setattr__(self, "checkpoints", tuple(self.checkpoints))
        indices = [c.checkpoint for c in self.checkpoints]
        if any(b <= a for a, b in zip(indices, indices[1:])):
            raise ConfigError(f"trial {self.trial_id}: checkpoint indices must increase; "
                              f"got {indices}")
        # The tables must carry the oracle's counts: a finished trial's last
        # checkpoint was taken with everything spent, so the two must agree.
        last = self.checkpoints[-1].queries if self.checkpoints else None
        if self.status != "failed" and last is not None and last != self.queries:
            raise ConfigError(f"trial {self.trial_id}: queries {self.queries} differ from the last "
                              f"checkpoint's {self.checkpoints[-1].queries}")

    @classmethod
    def from_run(cls, run: RunResult, *, status: str = "completed", **identity: Any) -> TrialRecord:
        """A finished trial from the loop's result; ``identity`` gives the other fields."""
        identity.setdefault("nonfinite_losses", int(run.extra.get("nonfinite_losses", 0)))
        return cls(status=status, queries=run.used, checkpoints=tuple(run.checkpoints),
                   stop_reasons=dict(run.stop_reasons), wall_s=run.wall_s, **identity)

    @classmethod
    def from_outcome(cls, outcome: TrialOutcome, *, trial_error: str | None = None,
                     **identity: Any) -> TrialRecord:
        """The record of a seed's ``outcome``; ``identity`` gives the fields the worker does not know.

        A seed still running when its trial ended was stopped by the scheduler, unless the
        trial itself failed (``trial_error``).
        """
        status = seed_status(outcome.status, bool(trial_error))
        identity.update(device=outcome.device, nonfinite_losses=outcome.nonfinite_losses,
                        restarts=outcome.restarts, started_at=outcome.started_at or time.time())
        checkpoints = outcome.checkpoints
        queries = checkpoints[-1].queries if checkpoints else QueryCounts()
        if status == "failed":
            return cls.from_failure(outcome.error or trial_error or "trial failed",
                                    queries=queries, checkpoints=checkpoints, **identity)
        wall_s = outcome.wall_s
        if wall_s is None and status == "stopped" and isinstance(outcome.started_at, float):
            wall_s = max(0.0, time.time() - outcome.started_at)  # stopped now, by the scheduler
        return cls(status=status, queries=queries, checkpoints=checkpoints,
                   stop_reasons=outcome.stop_reasons, wall_s=wall_s, **identity)

    @classmethod
    def from_failure(cls, error: BaseException | str, *, queries: QueryCounts = QueryCounts(),
                     checkpoints: Sequence[CheckpointRecord] = (), **identity: Any) -> TrialRecord:
        """A failed trial: the error, and the queries and checkpoints made before it."""
        message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        return cls(status="failed", error=message or "unknown error", queries=queries,
                   checkpoints=tuple(checkpoints), **identity)

    def _metrics(self) -> dict[str, float | None]:
        vals = [_opt_float(c.val_acc) for c in self.checkpoints]
        tests = [_opt_float(c.test_acc) for c in self.checkpoints]
        losses = [_opt_float(c.val_loss) for c in self.checkpoints]
        measured = [v for v in vals if v is not None]
        best = max(measured) if measured else None
        # Honest selection: the test accuracy of the first checkpoint that reached
        # the best validation accuracy, never the best test accuracy.
        best_test = tests[vals.index(best)] if best is not None else None
        measured_losses = [v for v in losses if v is not None]
        return {
            "best_val_acc": best,
            "best_val_test_acc": best_test,
            "final_val_acc": vals[-1] if vals else None,
            "final_test_acc": tests[-1] if tests else None,
            "best_val_loss": min(measured_losses) if measured_losses else None,
            "final_val_loss": losses[-1] if losses else None,
        }

    def trials_row(self, param_types: Mapping[str, str],
                   provenance: Provenance | None = None) -> dict[str, Any]:
        """This trial as a row of :func:`trials_schema` (``param_types``).

        Raises:
            ConfigError: a hyperparameter is not declared in ``param_types`` or has the wrong type.
        """
        unknown = sorted(set(self.params) - set(param_types))
        if unknown:
            raise ConfigError(f"trial {self.trial_id}: hyperparameters {unknown} are not in the "
                              f"sweep's schema ({sorted(param_types)})")
        prov = self.provenance or provenance or Provenance()
        row: dict[str, Any] = {
            "trial_id": self.trial_id, "sweep": self.sweep, "sample_id": self.sample_id,
            "method": self.method, "method_version": int(self.method_version),
            "method_digest": self.method_digest,
            "estimator": self.estimator, "model": self.model,
            "dataset": self.dataset, "shots": int(self.shots), "seed": int(self.seed),
            "status": self.status, "error": self.error, "black_box": bool(self.black_box),
            "budget": None if self.budget is None else int(self.budget),
            "budget_unit": self.budget_unit, "budget_run": self.budget_run,
            **{query_column(u): self.queries[u] for u in UNITS},
            **self._metrics(),
            "stop_reasons": canonical_json(dict(self.stop_reasons)),
            "nonfinite_losses": int(self.nonfinite_losses), "restarts": int(self.restarts),
            "wall_s": _opt_float(self.wall_s), "device": self.device,
            "started_at": self.started_at.astimezone(timezone.utc),  # type: ignore[union-attr]
            "config_hash": config_hash(self.config),
            "config_json": canonical_json(dict(self.config)),
            "git_rev": prov.git_rev,
            **{f"{k}_version": prov.versions.get(k) for k in ("python", *DISTRIBUTIONS)},
        }
        for name in sorted(param_types):
            row[f"param_{name}"] = _coerce_param(name, self.params.get(name), param_types[name])
        return row

    def curves_rows(self) -> list[dict[str, Any]]:
        """One row of :data:`CURVES_SCHEMA` per checkpoint (none for a trial that failed early)."""
        return [{"trial_id": self.trial_id, "sweep": self.sweep, "method": self.method,
                 "seed": int(self.seed), **checkpoint_row(c)} for c in self.checkpoints]
