"""TensorBoard: each seed's run an event folder ``tensorboard/<sample_id>/<trial_id>/``.

Written with tensorboardX (Ray Tune's writer, installed with it): each
checkpoint's numbers are scalars at the step of the queries spent in the
budget's unit, the row's numbers scalars ``row/<column>`` at the last step,
the parameters and the whole row text summaries (JSON), and the parameters
with the row's accuracies an HParams session. Runs of one setting sit in
one folder: ``tensorboard --logdir <folder>/tensorboard`` shows them side by
side.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from tensorboardX import SummaryWriter
from tensorboardX.summary import hparams

if TYPE_CHECKING:  # runs imports this module when a sweep names it
    from sweep.tracking.runs import SeedRun

__all__ = ["TensorBoardTracker"]

#: The row's columns an HParams session compares the settings by.
HPARAM_METRICS = ("best_val_acc", "best_val_test_acc", "final_test_acc")


class TensorBoardTracker:
    """Writes each run's event files under ``<folder>/tensorboard/``."""

    name = "tensorboard"

    def __init__(self, folder: Path) -> None:
        self.folder = folder / "tensorboard"

    def log(self, run: SeedRun) -> None:
        with SummaryWriter(logdir=str(self.folder / run.group / run.name)) as writer:
            for c in run.checkpoints:
                for key, value in c.items():
                    if key != run.step:
                        writer.add_scalar(key, value, global_step=int(c[run.step]),
                                          walltime=run.started + c.get("wall_s", 0.0))
            final = int(run.checkpoints[-1][run.step]) if run.checkpoints else 0
            for key, value in run.outcome.items():
                writer.add_scalar(f"row/{key}", value, global_step=final)
            writer.add_text("params", f"```\n{json.dumps(run.params, indent=1)}\n```", final)
            writer.add_text("row", f"```\n{json.dumps(run.row, indent=1)}\n```", final)
            scores = {f"row/{k}": run.outcome[k] for k in HPARAM_METRICS if k in run.outcome}
            for summary in hparams(run.params, scores):
                writer.file_writer.add_summary(summary)

    def close(self) -> None:
        pass
