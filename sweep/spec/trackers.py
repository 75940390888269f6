"""``[tracking]``: the experiment trackers a sweep logs to (``sweep.tracking`` writes to them).

A tracker must be installed where the specification is read with its paths
checked (the driver's node): one that is not is refused here, before any
work, naming the package to install. Checking a cluster's specification on
another machine (``check_paths=False``: ``--plan``) skips that check.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

from sweep.errors import describe
from sweep.spec.sections import TRACKERS, WANDB_MODES, TrackingSection

__all__ = ["installed", "parse_tracking"]


def installed(tracker: str) -> bool:
    """Whether the module that writes to ``tracker`` can be imported (without importing it)."""
    module, _ = TRACKERS[tracker]
    return importlib.util.find_spec(module) is not None


def parse_tracking(parser, data: Mapping[str, Any]) -> TrackingSection:
    """``[tracking]``, every value checked; ``parser`` is the specification's (its checks, one-line
    errors, base folder and ``check_paths``)."""
    keys = list(TrackingSection.__dataclass_fields__)
    table = parser.table(data, "", "tracking", keys)
    if not table:
        return TrackingSection()
    trackers = parser.array(table, "tracking", "trackers")
    for name in trackers:
        if not isinstance(name, str):
            parser.fail("tracking.trackers", f"expected tracker names; got {describe(name)}")
        parser.choice(name, "tracking.trackers", list(TRACKERS), "tracker")
        if parser.check_paths and not installed(name):
            package = TRACKERS[name][1]
            parser.fail("tracking.trackers", f"{name} is not installed here: pip install {package} "
                                              f"(or promptsweep[{name}])")
    optional = {k: parser.str_(table, "tracking", k) for k in ("project", "mlflow_uri",
                                                                "wandb_entity") if k in table}
    for key, value in optional.items():
        if not value:
            parser.fail(f"tracking.{key}", "must not be empty (leave the key out for the default)")
    folder = str(parser.path(table["folder"], "tracking.folder")) if "folder" in table else None
    return TrackingSection(
        trackers=tuple(trackers), folder=folder, **optional,
        wandb_mode=parser.str_(table, "tracking", "wandb_mode", "offline", choices=WANDB_MODES,
                               what="W&B mode"))
