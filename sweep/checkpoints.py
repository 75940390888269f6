"""Budget checkpoints of running trials, kept on the driver's node: a trial lost with its node, its
process or the launcher goes on from its last checkpoint, not from its first query.

At every budget checkpoint a trial sends its state (``sweep.tuning.trial.TrialState``: each
seed's method, query counts, mini-batch stream and records, pickled) to the
``CheckpointStore``, a small Ray actor on the driver's node that writes it whole to
``results/<sweep>/checkpoints/<sample_id>.pkl`` (a temporary file, fsync, rename). A trial that
starts asks the store for its setting's checkpoint and resumes from it: Ray Tune starting again
a trial whose process was lost (``[resources] trial_restarts``), or ``--resume`` after the
launcher stopped, whose plan reruns each checkpointed setting with its parameters
(``sweep.tuning.plan``). The driver removes a checkpoint once the trial's rows are written.

On the driver's node and not the trial's: a cluster's nodes need share no disk, and a node
that goes takes its own disk with it. A checkpoint is a pickle, read only from the sweep's own
results folder.

Like ``sweep.keeper``, this module imports nothing heavy: the store's process loads no torch.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

__all__ = ["CHECKPOINTS", "CheckpointStore", "checkpoint_path", "remove_checkpoint"]

#: The folder of a sweep's checkpoints, beside trials/ and curves/.
CHECKPOINTS = "checkpoints"
_SUFFIX = ".pkl"
_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def checkpoint_path(results_dir: Path, sample_id: str) -> Path:
    if not _NAME.match(sample_id):
        raise ValueError(f"sample id {sample_id!r} cannot name a checkpoint file")
    return Path(results_dir) / CHECKPOINTS / f"{sample_id}{_SUFFIX}"


def remove_checkpoint(results_dir: Path, sample_id: str) -> None:
    """Forget ``sample_id``'s checkpoint (its rows are written); the folder goes once empty."""
    path = checkpoint_path(results_dir, sample_id)
    path.unlink(missing_ok=True)
    try:
        path.parent.rmdir()
    except OSError:
        pass  # other trials' checkpoints, or none was ever written


class CheckpointStore:
    """The latest checkpoint of each running trial, as files in ``results_dir``/checkpoints
    (the body of a Ray actor on the driver's node)."""

    def __init__(self, results_dir: str) -> None:
        self.results_dir = Path(results_dir)

    def put(self, sample_id: str, blob: bytes) -> None:
        """Keep ``blob`` as ``sample_id``'s checkpoint, whole or not at all."""
        final = checkpoint_path(self.results_dir, sample_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, sample_id: str) -> bytes | None:
        """``sample_id``'s checkpoint, or None if it has none."""
        try:
            return checkpoint_path(self.results_dir, sample_id).read_bytes()
        except FileNotFoundError:
            return None
