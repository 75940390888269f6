"""The results of a sweep as Parquet: one trials row and its curves rows per trial.

Layout (documented column by column in ``results/README.md``)::

    <root>/<sweep>/trials/part-<trial_id>.parquet   one row: the trial
    <root>/<sweep>/curves/part-<trial_id>.parquet   one row per budget checkpoint

The driver alone writes, through :class:`ResultsWriter`. Each part is written
to a hidden temporary file in its folder, fsynced and renamed into place, so a
part either exists whole or not at all; curves go first, so a trial is
complete iff both of its parts exist and read. Every part of one sweep has
the same explicit schema (hyperparameters are the union over the sweep's
methods, null where a method lacks one): pyarrow takes the first file's
schema when it reads a folder, which is what makes
``pd.read_parquet("results/<sweep>/trials")`` work.

Example::

    writer = ResultsWriter(Path("results"), "coop16", {"sigma": "float", "popsize": "int"})
    writer.write(TrialRecord.from_run(run, trial_id="t0001", sweep="coop16", ...))
    trials, curves = load_results(Path("results/coop16"))
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sweep.budget import UNITS, QueryCounts
from sweep.errors import ConfigError, PromptTuningError
from sweep.loop import CheckpointRecord, RunResult

__all__ = [
    "CURVES_SCHEMA",
    "PARAM_TYPES",
    "STATUSES",
    "Provenance",
    "ResultsError",
    "ResultsWarning",
    "ResultsWriter",
    "ScanResult",
    "TrialRecord",
    "canonical_json",
    "checkpoints_from_rows",
    "config_hash",
    "git_rev",
    "load_results",
    "package_versions",
    "remove_incomplete",
    "scan",
    "trials_schema",
]

#: How a trial ended: ran to its budget or its method's stop; stopped early by the
#: scheduler (ASHA); raised.
STATUSES = ("completed", "stopped", "failed")

#: Hyperparameter type names accepted by :func:`trials_schema`, and their Arrow types.
PARAM_TYPES: dict[str, pa.DataType] = {
    "float": pa.float64(),
    "int": pa.int64(),
    "str": pa.string(),
    "bool": pa.bool_(),
}

SCHEMA_VERSION = "1"
_PART = re.compile(r"^part-(?P<id>[A-Za-z0-9][A-Za-z0-9._-]*)\.parquet$")
_TRIAL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_TMP_SUFFIX = ".tmp"
_PROJECT_ROOT = Path(__file__).resolve().parents[1]


class ResultsError(PromptTuningError, OSError):
    """The results folder cannot be written or read (full, read-only, not a folder, foreign)."""


class ResultsWarning(UserWarning):
    """Part files were skipped on load because they do not read (a crash truncated them)."""


def _q(unit: str) -> str:
    return f"queries_{unit}"


def _field(name: str, type_: pa.DataType, nullable: bool = True) -> pa.Field:
    return pa.field(name, type_, nullable=nullable)


# Columns of the trials table before the param_<name> columns, in order.
_TRIALS_FIELDS: tuple[pa.Field, ...] = (
    _field("trial_id", pa.string(), False),
    _field("sweep", pa.string(), False),
    _field("sample_id", pa.string(), False),
    _field("method", pa.string(), False),
    _field("estimator", pa.string()),
    _field("model", pa.string(), False),
    _field("dataset", pa.string(), False),
    _field("shots", pa.int64(), False),
    _field("seed", pa.int64(), False),
    _field("status", pa.string(), False),
    _field("error", pa.string()),
    _field("black_box", pa.bool_(), False),
    _field("budget", pa.int64()),
    _field("budget_unit", pa.string(), False),
    *(_field(_q(u), pa.int64(), False) for u in UNITS),
    _field("best_val_acc", pa.float64()),
    _field("best_val_test_acc", pa.float64()),
    _field("final_val_acc", pa.float64()),
    _field("final_test_acc", pa.float64()),
    _field("stop_reasons", pa.string(), False),
    _field("nonfinite_losses", pa.int64(), False),
    _field("wall_s", pa.float64()),
    _field("device", pa.string()),
    _field("started_at", pa.timestamp("us", tz="UTC"), False),
    _field("config_hash", pa.string(), False),
    _field("config_json", pa.string(), False),
    _field("git_rev", pa.string(), False),
    _field("python_version", pa.string()),
    _field("torch_version", pa.string()),
    _field("open_clip_version", pa.string()),
    _field("ray_version", pa.string()),
    _field("optuna_version", pa.string()),
    _field("promptsweep_version", pa.string()),
)

#: The curves table: one row per trial and budget checkpoint.
CURVES_SCHEMA = pa.schema(
    [
        _field("trial_id", pa.string(), False),
        _field("sweep", pa.string(), False),
        _field("method", pa.string(), False),
        _field("seed", pa.int64(), False),
        _field("checkpoint", pa.int32(), False),
        *(_field(_q(u), pa.int64(), False) for u in UNITS),
        _field("train_loss", pa.float64()),
        _field("val_acc", pa.float64()),
        _field("test_acc", pa.float64()),
        _field("wall_s", pa.float64()),
    ],
    metadata={"promptsweep.table": "curves", "promptsweep.schema_version": SCHEMA_VERSION},
)


def trials_schema(param_types: Mapping[str, str]) -> pa.Schema:
    """The trials schema of a sweep whose hyperparameters (union over methods) are ``param_types``.

    Args:
        param_types: hyperparameter name -> "float" | "int" | "str" | "bool".

    Returns:
        The fixed columns, then one nullable ``param_<name>`` column per
        hyperparameter in name order (so the dict's order does not matter).

    Raises:
        ConfigError: a name is not an identifier or a type is unknown.
    """
    params = []
    for name in sorted(param_types):
        kind = param_types[name]
        if not isinstance(name, str) or not _PARAM_NAME.match(name):
            raise ConfigError(f"hyperparameter name {name!r} is not an identifier")
        if kind not in PARAM_TYPES:
            raise ConfigError(f"hyperparameter {name!r} has type {kind!r}; valid types: "
                              f"{', '.join(PARAM_TYPES)}")
        params.append(_field(f"param_{name}", PARAM_TYPES[kind]))
    return pa.schema([*_TRIALS_FIELDS, *params],
                     metadata={"promptsweep.table": "trials",
                               "promptsweep.schema_version": SCHEMA_VERSION})


# ---------------------------------------------------------------- provenance


def git_rev() -> str:
    """The project's git commit (``-dirty`` if tracked files changed) or "unknown"; never raises."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # a read must not take the index lock

    def git(*args: str) -> str:
        out = subprocess.run(["git", "-C", str(_PROJECT_ROOT), *args], capture_output=True,
                             text=True, timeout=10, env=env, check=True)
        return out.stdout.strip()

    try:
        # An installed (non-editable) copy may sit inside some other repository.
        if Path(git("rev-parse", "--show-toplevel")).resolve() != _PROJECT_ROOT:
            return "unknown"
        rev = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return f"{rev}-dirty" if dirty else rev
    except (OSError, subprocess.SubprocessError, ValueError):
        return "unknown"


#: Provenance column prefix -> distribution name.
_DISTRIBUTIONS = {"torch": "torch", "open_clip": "open_clip_torch", "ray": "ray",
                  "optuna": "optuna", "promptsweep": "promptsweep"}


def package_versions() -> dict[str, str | None]:
    """Versions of Python and the packages a result depends on (None: not installed).

    Read from the installed metadata, so nothing heavy (torch, ray) is imported.
    """
    out: dict[str, str | None] = {"python": ".".join(map(str, sys.version_info[:3]))}
    for key, dist in _DISTRIBUTIONS.items():
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = None
    return out


@dataclass(frozen=True)
class Provenance:
    """Where a result came from: the code revision and the package versions."""

    git_rev: str = "unknown"
    versions: Mapping[str, str | None] = field(default_factory=dict)

    @staticmethod
    @functools.lru_cache(maxsize=1)
    def current() -> Provenance:
        """This process's provenance (computed once: one git call per process, not per trial)."""
        return Provenance(git_rev(), package_versions())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the same value gives the same text."""
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          default=_json_default)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot serialise to JSON: {exc}") from exc


def config_hash(config: Mapping[str, Any]) -> str:
    """The sha256 (hex) of ``config``'s canonical JSON: independent of key order."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


# ---------------------------------------------------------------- records


def _opt_float(x: float | None) -> float | None:
    # NaN means "not measured" in the loop (no scorer, no request yet): store it as
    # null so the tables have one notion of missing. inf is a measurement: kept.
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


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
    black_box: bool = True
    estimator: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    status: str = "completed"
    error: str | None = None
    #: the oracle's own counts at the end of the trial (or at the failure).
    queries: QueryCounts = QueryCounts()
    checkpoints: Sequence[CheckpointRecord] = ()
    stop_reasons: Mapping[str, Any] = field(default_factory=dict)
    nonfinite_losses: int = 0
    wall_s: float | None = None
    device: str | None = None
    #: a timezone-aware datetime, or epoch seconds (``time.time()``).
    started_at: datetime | float = field(default_factory=lambda: datetime.now(timezone.utc))
    #: the resolved configuration of the trial (config_json, config_hash).
    config: Mapping[str, Any] = field(default_factory=dict)
    #: None: the writer's (the driver's) provenance.
    provenance: Provenance | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.trial_id, str) or not _TRIAL_ID.match(self.trial_id):
            raise ConfigError(f"trial id {self.trial_id!r} must be letters, digits, '.', '_' or "
                              "'-' (it names the part files)")
        if self.status not in STATUSES:
            raise ConfigError(f"trial status must be one of {', '.join(STATUSES)}; "
                              f"got {self.status!r}")
        if self.status == "failed" and not self.error:
            raise ConfigError(f"failed trial {self.trial_id} needs an error message")
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
    def from_failure(cls, error: BaseException | str, *, queries: QueryCounts = QueryCounts(),
                     checkpoints: Sequence[CheckpointRecord] = (), **identity: Any) -> TrialRecord:
        """A failed trial: the error, and the queries and checkpoints made before it."""
        message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        return cls(status="failed", error=message or "unknown error", queries=queries,
                   checkpoints=tuple(checkpoints), **identity)

    def _metrics(self) -> dict[str, float | None]:
        vals = [_opt_float(c.val_acc) for c in self.checkpoints]
        tests = [_opt_float(c.test_acc) for c in self.checkpoints]
        measured = [v for v in vals if v is not None]
        best = max(measured) if measured else None
        # Honest selection: the test accuracy of the first checkpoint that reached
        # the best validation accuracy, never the best test accuracy.
        best_test = tests[vals.index(best)] if best is not None else None
        return {
            "best_val_acc": best,
            "best_val_test_acc": best_test,
            "final_val_acc": vals[-1] if vals else None,
            "final_test_acc": tests[-1] if tests else None,
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
            "method": self.method, "estimator": self.estimator, "model": self.model,
            "dataset": self.dataset, "shots": int(self.shots), "seed": int(self.seed),
            "status": self.status, "error": self.error, "black_box": bool(self.black_box),
            "budget": None if self.budget is None else int(self.budget),
            "budget_unit": self.budget_unit,
            **{_q(u): self.queries[u] for u in UNITS},
            **self._metrics(),
            "stop_reasons": canonical_json(dict(self.stop_reasons)),
            "nonfinite_losses": int(self.nonfinite_losses),
            "wall_s": _opt_float(self.wall_s), "device": self.device,
            "started_at": self.started_at.astimezone(timezone.utc),  # type: ignore[union-attr]
            "config_hash": config_hash(self.config),
            "config_json": canonical_json(dict(self.config)),
            "git_rev": prov.git_rev,
            **{f"{k}_version": prov.versions.get(k) for k in ("python", *_DISTRIBUTIONS)},
        }
        for name in sorted(param_types):
            row[f"param_{name}"] = _coerce_param(name, self.params.get(name), param_types[name])
        return row

    def curves_rows(self) -> list[dict[str, Any]]:
        """One row of :data:`CURVES_SCHEMA` per checkpoint (none for a trial that failed early)."""
        return [
            {"trial_id": self.trial_id, "sweep": self.sweep, "method": self.method,
             "seed": int(self.seed), "checkpoint": int(c.checkpoint),
             **{_q(u): c.queries[u] for u in UNITS},
             "train_loss": _opt_float(c.train_loss), "val_acc": _opt_float(c.val_acc),
             "test_acc": _opt_float(c.test_acc), "wall_s": _opt_float(c.wall_s)}
            for c in self.checkpoints
        ]


def checkpoints_from_rows(rows: Iterable[Mapping[str, Any]]) -> list[CheckpointRecord]:
    """CheckpointRecords from plain rows keyed like the curves columns (as a worker reports them).

    Raises:
        ConfigError: a row lacks a column.
    """
    out = []
    for row in rows:
        try:
            out.append(CheckpointRecord(
                checkpoint=int(row["checkpoint"]),
                queries=QueryCounts(*(int(row[_q(u)]) for u in UNITS)),
                train_loss=row["train_loss"], val_acc=row["val_acc"], test_acc=row["test_acc"],
                wall_s=row["wall_s"]))
        except KeyError as exc:
            raise ConfigError(f"checkpoint row lacks {exc.args[0]!r}: {dict(row)}") from exc
    return out


# ---------------------------------------------------------------- writing


def _fsync_dir(folder: Path) -> None:
    # The rename is durable only once the folder's entry is on disk.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(table: pa.Table, final: Path) -> None:
    """Write ``table`` to ``final`` whole or not at all (temporary, fsync, rename, fsync folder)."""
    # Hidden name: pyarrow's folder reader skips files starting with '.', so a temporary
    # left by a hard kill never breaks pd.read_parquet.
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=_TMP_SUFFIX, dir=final.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            pq.write_table(table, f, write_page_checksum=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        try:
            Path(tmp).unlink(missing_ok=True)
        except OSError:
            pass  # the original error is the one worth reporting
        raise
    _fsync_dir(final.parent)


def _probe(folder: Path) -> None:
    """Create and remove a file in ``folder``: an existing folder may be read-only."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".probe.", suffix=_TMP_SUFFIX, dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise _results_error("write in results folder", folder, exc) from exc


def _results_error(action: str, path: Path, exc: OSError) -> ResultsError:
    reason = exc.strerror or str(exc) or type(exc).__name__
    err = ResultsError(f"cannot {action} {path}: {reason}")
    err.errno = exc.errno  # callers may still test errno.ENOSPC and friends
    return err


class ResultsWriter:
    """Writes the parts of one sweep under ``root/<sweep>/``; the driver's only writer.

    Args:
        root: the results folder (created if missing).
        sweep: the sweep's name: one path component inside ``root``.
        param_types: hyperparameter name -> type, the union over the sweep's methods.

    Raises:
        ConfigError: the sweep name escapes ``root`` or a parameter type is unknown.
        ResultsError: the folders cannot be created or written in, or the sweep
            already holds parts written with a different schema.
    """

    def __init__(self, root: Path, sweep: str, param_types: Mapping[str, str]) -> None:
        self.param_types = dict(param_types)
        self.trials_schema = trials_schema(self.param_types)
        self.sweep = sweep
        self.sweep_dir = _sweep_dir(Path(root), sweep)
        self.trials_dir = self.sweep_dir / "trials"
        self.curves_dir = self.sweep_dir / "curves"
        for folder in (self.trials_dir, self.curves_dir):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise _results_error("create results folder", folder, exc) from exc
            _probe(folder)
        self._check_existing_schema()
        self.provenance = Provenance.current()

    def _check_existing_schema(self) -> None:
        # Resuming with a different set of hyperparameters would give the folder two
        # schemas, and pd.read_parquet would silently drop or fail on columns.
        for path in sorted(self.trials_dir.glob("part-*.parquet")):
            try:
                existing = pq.read_schema(path)
            except (OSError, pa.ArrowException):
                continue  # a corrupt part: scan reports it, resume reruns it
            if not existing.equals(self.trials_schema, check_metadata=False):
                old = {f.name for f in existing} - {f.name for f in self.trials_schema}
                new = {f.name for f in self.trials_schema} - {f.name for f in existing}
                raise ResultsError(
                    f"{self.sweep_dir} holds trials written with a different schema "
                    f"(only in the folder: {sorted(old)}; only in this sweep: {sorted(new)}); "
                    "resume with the same specification or choose a new sweep name")
            return

    def write(self, record: TrialRecord) -> None:
        """Write ``record``'s curves part, then its trials part, each atomically.

        Rewriting a trial id replaces both parts.

        Raises:
            ConfigError: the record does not fit the sweep (name, parameters).
            ResultsError: a part cannot be written (disk full, read-only); no
                part of this trial is left behind.
        """
        if record.sweep != self.sweep:
            raise ConfigError(f"trial {record.trial_id} belongs to sweep {record.sweep!r}, "
                              f"not {self.sweep!r}")
        trials = pa.Table.from_pylist([record.trials_row(self.param_types, self.provenance)],
                                      schema=self.trials_schema)
        curves = pa.Table.from_pylist(record.curves_rows(), schema=CURVES_SCHEMA)
        for table in (trials, curves):
            # from_pylist accepts None in a non-nullable column; the file must not.
            for f in table.schema:
                if not f.nullable and table.column(f.name).null_count:
                    raise ConfigError(f"trial {record.trial_id}: column {f.name!r} is required "
                                      "but the record has no value for it")
        name = f"part-{record.trial_id}.parquet"
        curves_path, trials_path = self.curves_dir / name, self.trials_dir / name
        try:
            _write_atomic(curves, curves_path)
        except OSError as exc:
            raise _results_error("write curves part", curves_path, exc) from exc
        try:
            _write_atomic(trials, trials_path)
        except OSError as exc:
            # Without its trials part the trial is incomplete anyway; dropping both
            # parts (the rename may have happened before the folder fsync failed)
            # leaves the folder as if the write never started.
            for path in (trials_path, curves_path):
                try:
                    path.unlink(missing_ok=True)
                except OSError:
                    pass
            raise _results_error("write trials part", trials_path, exc) from exc

    def scan(self) -> ScanResult:
        """:func:`scan` of this sweep."""
        return scan(self.sweep_dir)


def _sweep_dir(root: Path, sweep: str) -> Path:
    if not isinstance(sweep, str) or not sweep or sweep in (".", "..") or "/" in sweep \
            or "\\" in sweep or "\0" in sweep:
        raise ConfigError(f"sweep name {sweep!r} must be one non-empty path component")
    try:
        base = root.resolve()
        target = (root / sweep).resolve()
    except (OSError, RuntimeError) as exc:
        raise ConfigError(f"cannot resolve sweep folder {root / sweep}: {exc}") from exc
    # resolve() follows symlinks: a link inside root pointing elsewhere escapes too.
    if target.parent != base:
        raise ConfigError(f"sweep {sweep!r} resolves to {target}, outside the results folder "
                          f"{base}")
    if base.exists() and not base.is_dir():
        raise ResultsError(f"results root {root} is not a folder")
    return target


# ---------------------------------------------------------------- reading


@dataclass(frozen=True)
class ScanResult:
    """What a sweep folder holds, part by part."""

    sweep_dir: Path
    #: trial ids whose trials and curves parts both read: done, never rerun.
    complete: tuple[str, ...]
    #: trial ids with some part on disk but not complete: remove and rerun.
    incomplete: tuple[str, ...]
    #: part files that do not read (truncated by a crash, or not this project's).
    corrupt: tuple[Path, ...]
    #: parts whose other half is missing (a write interrupted between the two).
    orphans: tuple[Path, ...]
    #: temporary files left by an interrupted write.
    temporaries: tuple[Path, ...]

    def summary(self) -> str:
        """One line for the log."""
        parts = [f"{len(self.complete)} complete trials"]
        if self.incomplete:
            parts.append(f"{len(self.incomplete)} incomplete ({', '.join(self.incomplete[:5])}"
                         f"{', ...' if len(self.incomplete) > 5 else ''})")
        if self.corrupt:
            parts.append(f"{len(self.corrupt)} corrupt part files")
        if self.temporaries:
            parts.append(f"{len(self.temporaries)} leftover temporaries")
        return f"{self.sweep_dir}: " + "; ".join(parts)


def _read_part(path: Path, table: str, trial_id: str) -> pa.Table | None:
    """The part's table, or None if it does not read or is not a part of ``trial_id``."""
    try:
        pq.read_metadata(path)  # a truncated file has no footer: fails here, cheaply
        data = pq.read_table(path, page_checksum_verification=True)
    except (OSError, pa.ArrowException):
        return None
    ids = data.column("trial_id").to_pylist() if "trial_id" in data.column_names else None
    if ids is None or (table == "trials" and len(ids) != 1) or any(i != trial_id for i in ids):
        return None
    return data


def _parts(folder: Path) -> tuple[dict[str, Path], list[Path]]:
    parts: dict[str, Path] = {}
    temporaries: list[Path] = []
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            m = _PART.match(path.name)
            if m:
                parts[m["id"]] = path
            elif path.name.startswith(".part-") and path.name.endswith(_TMP_SUFFIX):
                temporaries.append(path)
    return parts, temporaries


def _require_sweep_dir(sweep_dir: Path) -> Path:
    sweep_dir = Path(sweep_dir)
    if not (sweep_dir / "trials").is_dir():
        raise ResultsError(f"{sweep_dir} is not a sweep's results folder (no trials/ folder in it)")
    return sweep_dir


def _read_all(sweep_dir: Path) -> tuple[ScanResult, dict[str, pa.Table], dict[str, pa.Table]]:
    sweep_dir = _require_sweep_dir(sweep_dir)
    trial_parts, tmp_t = _parts(sweep_dir / "trials")
    curve_parts, tmp_c = _parts(sweep_dir / "curves")
    trials: dict[str, pa.Table] = {}
    curves: dict[str, pa.Table] = {}
    corrupt: list[Path] = []
    for table, parts, out in (("trials", trial_parts, trials), ("curves", curve_parts, curves)):
        for trial_id, path in parts.items():
            data = _read_part(path, table, trial_id)
            if data is None:
                corrupt.append(path)
            else:
                out[trial_id] = data
    # Curves are written first, so a trials part without one was tampered with and
    # a curves part without one is an interrupted write: either way, incomplete.
    orphans = [curve_parts[i] for i in curve_parts.keys() - trial_parts.keys()]
    orphans += [trial_parts[i] for i in trial_parts.keys() - curve_parts.keys()]
    complete = sorted(trials.keys() & curves.keys())
    incomplete = sorted((trial_parts.keys() | curve_parts.keys()) - set(complete))
    result = ScanResult(sweep_dir, tuple(complete), tuple(incomplete), tuple(sorted(corrupt)),
                        tuple(sorted(orphans)), tuple(sorted(tmp_t + tmp_c)))
    keep = set(complete)
    return (result, {k: v for k, v in trials.items() if k in keep},
            {k: v for k, v in curves.items() if k in keep})


def scan(sweep_dir: Path) -> ScanResult:
    """Read every part of ``sweep_dir`` and sort the trial ids into complete and incomplete.

    Raises:
        ResultsError: ``sweep_dir`` is not a sweep's results folder.
    """
    return _read_all(sweep_dir)[0]


def _to_frame(tables: Iterable[pa.Table], schema: pa.Schema,
              sort: list[str]) -> pd.DataFrame:
    tables = list(tables)
    if not tables:
        return schema.empty_table().to_pandas()
    # "permissive" unifies the schemas of parts written by different versions (a
    # column missing in one becomes null) instead of refusing the whole sweep.
    table = pa.concat_tables(tables, promote_options="permissive")
    return table.sort_by([(c, "ascending") for c in sort]).to_pandas()


def load_results(sweep_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The trials and curves tables of a sweep as pandas DataFrames.

    Only complete trials are loaded; corrupt parts and orphans are skipped with
    a :class:`ResultsWarning` naming how many (``--resume`` reruns them), and
    listed in ``trials.attrs["skipped"]``. Rows are sorted by trial id (and
    checkpoint), so the same results give the same frames.

    Raises:
        ResultsError: ``sweep_dir`` is not a sweep's results folder.
    """
    result, trials, curves = _read_all(sweep_dir)
    skipped = sorted(set(result.corrupt) | set(result.orphans))
    if skipped:
        warnings.warn(
            f"{result.sweep_dir}: skipped {len(skipped)} part files of "
            f"{len(result.incomplete)} incomplete trials ({', '.join(p.name for p in skipped[:5])}"
            f"{', ...' if len(skipped) > 5 else ''}); `--resume` reruns them",
            ResultsWarning, stacklevel=2)
    # An empty sweep still has the fixed columns (its parameters are unknown).
    first = next(iter(trials.values()), None)
    trials_df = _to_frame(trials.values(), first.schema if first is not None else trials_schema({}),
                          ["trial_id"])
    curves_df = _to_frame(curves.values(), CURVES_SCHEMA, ["trial_id", "checkpoint"])
    trials_df.attrs["skipped"] = [str(p) for p in skipped]
    return trials_df, curves_df


def remove_incomplete(sweep_dir: Path, trial_ids: Iterable[str]) -> list[Path]:
    """Delete the parts of ``trial_ids`` and any leftover temporaries, before a resume reruns them.

    Call it while no writer is active on the sweep (the driver at start-up).

    Returns:
        The paths removed.

    Raises:
        ResultsError: a file cannot be removed.
    """
    sweep_dir = _require_sweep_dir(sweep_dir)
    removed: list[Path] = []
    targets: list[Path] = []
    for trial_id in trial_ids:
        if not _TRIAL_ID.match(trial_id):
            raise ConfigError(f"trial id {trial_id!r} is not a part name")
        # trials first: the trial stops counting as complete before its curves go.
        targets += [sweep_dir / t / f"part-{trial_id}.parquet" for t in ("trials", "curves")]
    for folder in ("trials", "curves"):
        targets += _parts(sweep_dir / folder)[1]
    for path in targets:
        try:
            if path.exists():
                path.unlink()
                removed.append(path)
        except OSError as exc:
            raise _results_error("remove", path, exc) from exc
    for folder in ("trials", "curves"):
        if (sweep_dir / folder).is_dir():
            _fsync_dir(sweep_dir / folder)
    return removed
