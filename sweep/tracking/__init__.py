"""Experiment trackers: each seed's run logged to Weights & Biases, MLflow or TensorBoard.

Opt-in (``[tracking] trackers``; none by default). The driver hands every
trials row it writes to ``Trackers.log`` (``sweep.tuning.ResultsCallback``),
which logs the seed's run (``SeedRun``: parameters, checkpoints, the row) to
each tracker on a thread of its own; trial workers never see a tracker. Each
tracker's package is imported only when a sweep names it.
"""

from sweep.tracking.runs import TRACKING_FOLDER, SeedRun, Tracker, Trackers, open_trackers

__all__ = ["TRACKING_FOLDER", "SeedRun", "Tracker", "Trackers", "open_trackers"]
