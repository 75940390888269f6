"""What a sweep's specification said of the whole sweep, kept beside its tables: ``sweep.json``.

The driver writes it when a sweep starts or resumes; the report reads it (the
description, and the metric that selects settings). Plain JSON, so that a
results folder stays data. A folder written before it existed (results schema
4 and older) has none: ``read_info`` gives what such sweeps ran with
(selection by validation accuracy, no description).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from sweep.results.files import ResultsError, results_error, temporary
from sweep.results.schema import SCHEMA_VERSION
from sweep.spec import METRICS, SweepSpec

__all__ = ["INFO_FILE", "SweepInfo", "describe_actors", "read_info", "write_info"]

#: The file's name in a sweep's results folder.
INFO_FILE = "sweep.json"


@dataclass(frozen=True)
class SweepInfo:
    """The sweep-wide facts of a results folder."""

    name: str
    #: the specification's ``description``: free text, shown at the top of the report.
    description: str = ""
    #: ``[search] metric``: the validation metric that selected settings (``METRICS``).
    metric: str = "val_acc"
    #: where the specification came from (a path, or the embedded default).
    source: str = ""
    #: the model's label (``ModelSpec.label``).
    model: str = ""
    #: the results schema the sweep writes (``SCHEMA_VERSION``).
    schema_version: str = SCHEMA_VERSION
    #: the plugins whose methods it runs (``sweep.spec.Plugin``): source, module, methods,
    #: digest of their source files.
    plugins: tuple[dict, ...] = ()

    @property
    def mode(self) -> str:
        """"max" or "min": the direction of ``metric``."""
        return METRICS[self.metric]

    @classmethod
    def of(cls, spec: SweepSpec) -> SweepInfo:
        return cls(name=spec.name, description=spec.description, metric=spec.search.metric,
                   source=spec.source, model=spec.model.label,
                   plugins=tuple({"source": p.source, "module": p.module,
                                  "methods": list(p.methods), "digest": p.digest}
                                 for p in spec.plugins))


def write_info(sweep_dir: Path, info: SweepInfo) -> Path:
    """Write ``info`` to ``sweep_dir/sweep.json``, whole or not at all (ResultsError)."""
    path = Path(sweep_dir) / INFO_FILE
    try:
        fd, tmp = temporary(path)  # under the umask: colleagues read it too
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(asdict(info), f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise results_error("write", path, exc) from exc
    return path


def read_info(sweep_dir: Path) -> SweepInfo:
    """The ``sweep.json`` of ``sweep_dir``, or what a folder from before it ran with.

    Raises:
        ResultsError: the file is there but is not a sweep's record.
    """
    path = Path(sweep_dir) / INFO_FILE
    if not path.is_file():
        return SweepInfo(name=Path(sweep_dir).name, schema_version="")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        known = {f.name for f in fields(SweepInfo)}
        info = SweepInfo(**{k: v for k, v in data.items() if k in known})
        info.mode  # noqa: B018 - a metric this version does not know
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ResultsError(f"{path} is not a sweep's record: {type(exc).__name__}: {exc}") from exc
    return info


def describe_actors(actors: list[dict]) -> str:
    """Where oracle actors run (entries of ``actors.json``), by node: ``2 on 1 node (10.0.1.7:
    cuda:0 (NVIDIA A10G), cuda:1 (NVIDIA A10G))``."""
    by_node: dict[str, list[str]] = {}
    for actor in actors:
        by_node.setdefault(str(actor.get("node", "?")), []).append(str(actor.get("device", "?")))
    nodes = "; ".join(f"{node}: {', '.join(devices)}" for node, devices in by_node.items())
    return f"{len(actors)} on {len(by_node)} node{'s' if len(by_node) != 1 else ''} ({nodes})"
