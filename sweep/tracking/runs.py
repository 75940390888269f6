"""Each seed's run as the trackers get it, and the driver's hook that hands it to them.

The driver writes one trials row per seed (``sweep.tuning.ResultsCallback``);
once it is written, ``Trackers.log`` turns the record and its row into a
``SeedRun`` (plain data: parameters, checkpoints, the row) and hands it to
every tracker of ``[tracking]`` on a thread of its own, so that the Tune loop
never waits for a tracker. A tracker that fails is reported once and dropped:
the tables are what a sweep is, the trackers a view of them.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from sweep.errors import ConfigError
from sweep.results import TrialRecord, checkpoint_row, query_column
from sweep.spec import TRACKERS, TrackingSection

__all__ = ["TRACKING_FOLDER", "SeedRun", "Tracker", "Trackers", "open_trackers"]

#: The trackers' folder in the sweep's results folder, unless ``[tracking] folder`` says another.
TRACKING_FOLDER = "tracking"
#: The trials row's columns that are a run's parameters, besides its hyperparameters
#: (``param_<name>``); the rest of the row is its outcome.
IDENTITY = ("sweep", "sample_id", "method", "method_version", "estimator", "model", "dataset",
            "shots", "seed", "budget", "budget_unit", "budget_run", "black_box")


def _plain(value: Any) -> Any:
    """A row's value as JSON has it: datetimes as ISO text, NaN as None."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


@dataclass(frozen=True)
class SeedRun:
    """One seed's run, as every tracker logs it.

    Attributes:
        name: the run's name, its ``trial_id``.
        group: the setting it belongs to, its ``sample_id`` (its seeds share it).
        params: the model, data set, method, seed, budget and hyperparameters
            (``param_<name>``), as the trials row has them; no None.
        step: the metric checkpoints are ordered by: ``queries_<budget unit>``.
        checkpoints: per checkpoint, the curves row's numbers (``checkpoint``, the
            queries in each unit, ``train_loss``, ``val_loss``, ``val_acc``,
            ``test_acc``, ``wall_s``), those not measured left out.
        row: the trials row as written, values as JSON has them; no None.
        started: when the seed started, in epoch seconds.
    """

    name: str
    group: str
    params: dict[str, Any]
    step: str
    checkpoints: tuple[dict[str, float], ...]
    row: dict[str, Any]
    started: float

    @classmethod
    def of(cls, record: TrialRecord, row: Mapping[str, Any]) -> SeedRun:
        """The run of ``record``, whose trials row is ``row``."""
        plain = {k: _plain(v) for k, v in row.items()}
        params = {k: plain[k] for k in IDENTITY if plain.get(k) is not None}
        params.update({k: v for k, v in plain.items() if k.startswith("param_") and v is not None})
        checkpoints = tuple({k: v for k, v in checkpoint_row(c).items() if v is not None}
                            for c in record.checkpoints)
        return cls(name=record.trial_id, group=record.sample_id, params=params,
                   step=query_column(record.budget_unit), checkpoints=checkpoints,
                   row={k: v for k, v in plain.items() if v is not None},
                   started=row["started_at"].timestamp())

    @property
    def failed(self) -> bool:
        return self.row.get("status") == "failed"

    @property
    def outcome(self) -> dict[str, float]:
        """The row's numbers (metrics, queries, time), its parameters left out."""
        return {k: float(v) for k, v in self.row.items() if k not in self.params
                and isinstance(v, (int, float)) and not k.startswith("param_")}


class Tracker(Protocol):
    """One experiment tracker: ``log`` writes a whole run, ``close`` ends the session."""

    name: str

    def log(self, run: SeedRun) -> None: ...

    def close(self) -> None: ...


_DONE = object()


class Trackers:
    """The driver's hook: each written row's run goes to every tracker, on a thread of their own.

    Args:
        trackers: the trackers of ``[tracking]``.
        warn: prints one line (the progress bar's ``write``).
    """

    def __init__(self, trackers: list[Tracker], warn: Callable[[str], None] = print) -> None:
        self.trackers, self.warn = list(trackers), warn
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks, this hook among them, with the run's state (tuner.pkl):
        # a copy has the trackers, not this process's queue and thread.
        return {**self.__dict__, "_queue": None, "_thread": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _queue=queue.Queue())

    def log(self, record: TrialRecord, row: Mapping[str, Any]) -> None:
        """Hand the run of ``record`` (whose trials row is ``row``) to the trackers."""
        if self._thread is None:  # no thread, and nothing on disk, before the first row
            self._thread = threading.Thread(target=self._work, name="trackers", daemon=True)
            self._thread.start()
        self._queue.put(SeedRun.of(record, row))

    def _work(self) -> None:
        while (run := self._queue.get()) is not _DONE:
            for tracker in list(self.trackers):
                try:
                    tracker.log(run)
                except Exception as exc:  # noqa: BLE001 - any tracker's failure, told once
                    self.trackers.remove(tracker)
                    self.warn(f"tracking: {tracker.name} failed on {run.name} "
                              f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]}); "
                              "nothing more is logged to it (the tables are not affected)")

    def close(self) -> None:
        """Wait until every run handed over is logged, then end each tracker's session."""
        if self._thread is None:
            return
        self._queue.put(_DONE)
        self._thread.join()
        for tracker in self.trackers:
            try:
                tracker.close()
            except Exception as exc:  # noqa: BLE001
                self.warn(f"tracking: {tracker.name} did not close cleanly ({exc})")


def _tracker(name: str, section: TrackingSection, folder: Path, project: str) -> Tracker:
    if name == "mlflow":
        from sweep.tracking.to_mlflow import MlflowTracker

        return MlflowTracker(section.mlflow_uri, project, folder)
    if name == "tensorboard":
        from sweep.tracking.to_tensorboard import TensorBoardTracker

        return TensorBoardTracker(folder)
    from sweep.tracking.to_wandb import WandbTracker

    return WandbTracker(folder, project, section.wandb_entity, section.wandb_mode)


def open_trackers(section: TrackingSection, sweep: str, results_dir: Path,
                  warn: Callable[[str], None] = print) -> Trackers | None:
    """The trackers of ``section`` for the sweep ``sweep`` whose results are in ``results_dir``;
    None when it names none. Nothing is written before the first run is logged.

    Raises:
        ConfigError: a tracker's package is not installed (it names the package).
    """
    if not section.trackers:
        return None
    folder = Path(section.folder) if section.folder else Path(results_dir) / TRACKING_FOLDER
    trackers = []
    for name in section.trackers:
        try:
            trackers.append(_tracker(name, section, folder.resolve(), section.project or sweep))
        except ImportError as exc:
            raise ConfigError(f"[tracking] {name}: cannot import {exc.name or TRACKERS[name][0]}; "
                              f"pip install {TRACKERS[name][1]} (or promptsweep[{name}])") from exc
    return Trackers(trackers, warn)
