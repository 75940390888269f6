"""MLflow: each seed's run an MLflow run of the sweep's experiment, tagged with its setting.

The store is ``[tracking] mlflow_uri``, by default a SQLite file in the
trackers' folder (``sqlite:///.../mlflow.db``: recent MLflow refuses a plain
folder as its store); ``mlflow ui --backend-store-uri sqlite:///...`` shows
it. A run's parameters are its ``SeedRun.params``; each checkpoint's numbers
are metrics at the step of the queries spent in the budget's unit; the row's
numbers are metrics ``row/<column>`` and its text tags ``row/<column>``.
Runs of one setting share the tag ``sample_id`` (group by it in the UI).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

if TYPE_CHECKING:  # runs imports this module when a sweep names it
    from sweep.tracking.runs import SeedRun

__all__ = ["MlflowTracker"]

#: MLflow's limits: parameters (and tags) in one ``log_batch``, a tag's or parameter's text.
_ITEMS, _TEXT = 100, 6000


class MlflowTracker:
    """Logs each run to the experiment ``experiment`` of the store at ``uri`` (None: a SQLite file
    ``mlflow.db`` in ``folder``)."""

    name = "mlflow"

    def __init__(self, uri: str | None, experiment: str, folder: Path) -> None:
        self.uri = uri or f"sqlite:///{folder / 'mlflow.db'}"
        self.experiment, self.folder = experiment, folder
        self._client: MlflowClient | None = None
        self._experiment_id = ""

    def _open(self) -> MlflowClient:
        if self._client is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            client = MlflowClient(tracking_uri=self.uri)
            found = client.get_experiment_by_name(self.experiment)
            # Artifacts (none are logged) beside the store, not in the working directory.
            self._experiment_id = found.experiment_id if found else client.create_experiment(
                self.experiment, artifact_location=(self.folder / "mlflow-artifacts").as_uri())
            self._client = client
        return self._client

    def log(self, run: SeedRun) -> None:
        client = self._open()
        start_ms = int(run.started * 1000)
        now = int(time.time() * 1000)
        created = client.create_run(self._experiment_id, start_time=start_ms, run_name=run.name,
                                    tags={"sample_id": run.group, "trial_id": run.name})
        run_id = created.info.run_id
        metrics = [Metric(key, float(value), start_ms + int(1000 * c.get("wall_s", 0.0)),
                          int(c[run.step]))
                   for c in run.checkpoints for key, value in c.items()]
        final = int(run.checkpoints[-1][run.step]) if run.checkpoints else 0
        metrics += [Metric(f"row/{key}", value, now, final) for key, value in run.outcome.items()]
        texts = {k: v for k, v in run.row.items() if isinstance(v, str)}
        tags = [RunTag(f"row/{key}", value[:_TEXT]) for key, value in texts.items()]
        params = [Param(key, str(value)[:_TEXT]) for key, value in run.params.items()]
        for i in range(0, max(len(metrics), len(tags), len(params)), _ITEMS):
            client.log_batch(run_id, metrics=metrics[i:i + _ITEMS], params=params[i:i + _ITEMS],
                             tags=tags[i:i + _ITEMS])
        end_ms = start_ms + int(1000 * float(run.row.get("wall_s", 0.0)))
        client.set_terminated(run_id, status="FAILED" if run.failed else "FINISHED",
                              end_time=max(end_ms, start_ms))

    def close(self) -> None:
        self._client = None
