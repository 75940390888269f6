"""Weights & Biases: each seed's run a W&B run, grouped by its setting (``sample_id``).

Offline by default (``[tracking] wandb_mode``): runs are written under
``<folder>/wandb/`` and uploaded later with ``wandb sync <folder>/wandb/offline-run-*``.
A run's config is its ``SeedRun.params``, its job type the method; each
checkpoint is one history row whose x-axis is the queries spent in the
budget's unit; the row goes to the run's summary as ``row/<column>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import wandb

if TYPE_CHECKING:  # runs imports this module when a sweep names it
    from sweep.tracking.runs import SeedRun

__all__ = ["WandbTracker"]


class WandbTracker:
    """Logs each run to the W&B project ``project`` (of ``entity``), in ``mode``, under ``folder``."""

    name = "wandb"

    def __init__(self, folder: Path, project: str, entity: str | None, mode: str) -> None:
        self.folder, self.project, self.entity, self.mode = folder, project, entity, mode

    def log(self, run: SeedRun) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        # Nothing about the driver's machine: no system metrics, no probes, no console capture.
        settings = wandb.Settings(console="off", silent=True, x_disable_stats=True,
                                  x_disable_machine_info=True, x_disable_meta=True,
                                  x_save_requirements=False, disable_git=True, disable_code=True,
                                  save_code=False)
        handle = wandb.init(project=self.project, entity=self.entity, mode=self.mode,
                            dir=str(self.folder), group=run.group, name=run.name,
                            job_type=str(run.params.get("method", "trial")), config=run.params,
                            reinit="create_new", settings=settings)
        try:
            handle.define_metric(run.step)
            handle.define_metric("*", step_metric=run.step)
            for checkpoint in run.checkpoints:
                handle.log(checkpoint)
            handle.summary.update({f"row/{key}": value for key, value in run.row.items()})
        finally:
            handle.finish(exit_code=1 if run.failed else 0)

    def close(self) -> None:
        wandb.teardown()
