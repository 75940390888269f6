"""Reading a sweep's results: which trials are complete, and the two tables as pandas frames.

A trial is complete iff both of its part files exist and read; anything else
of it (a part truncated by a crash, an orphan, a temporary) is incomplete
and is rerun by ``--resume``. ``read_sweep`` reads every part once and gives
both the scan and the complete tables; ``load_results`` is what a user calls.

Example::

    trials, curves = load_results(Path("results/coop16"))
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sweep.errors import ConfigError
from sweep.results.files import (
    PART,
    TMP_SUFFIX,
    TRIAL_ID,
    ResultsError,
    fsync_dir,
    part_name,
    results_error,
)
from sweep.results.schema import CURVES_SCHEMA, trials_schema

__all__ = ["ResultsWarning", "ScanResult", "SweepContents", "load_results", "read_sweep",
           "remove_incomplete", "scan"]


#: The schema metadata key of the results schema version (``SCHEMA_VERSION``).
_VERSION_KEY = b"promptsweep.schema_version"


class ResultsWarning(UserWarning):
    """Part files were skipped on load because they do not read (a crash truncated them)."""


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
            m = PART.match(path.name)
            if m:
                parts[m["id"]] = path
            elif path.name.startswith(".part-") and path.name.endswith(TMP_SUFFIX):
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


@dataclass(frozen=True)
class SweepContents:
    """A sweep folder read once: the scan, and the complete trials' tables."""

    scan: ScanResult
    #: one row per complete trial, sorted by trial id; ``attrs["skipped"]`` lists the
    #: part files left out (corrupt or orphaned).
    trials: pd.DataFrame
    #: one row per checkpoint of a complete trial, sorted by trial id and checkpoint.
    curves: pd.DataFrame
    #: the results schema versions its complete trials were written with ("": unknown).
    schema_versions: frozenset[str] = frozenset()

    @property
    def skipped(self) -> list[Path]:
        return sorted(set(self.scan.corrupt) | set(self.scan.orphans))


def read_sweep(sweep_dir: Path) -> SweepContents:
    """Read every part of ``sweep_dir`` once: what is complete, and the complete trials' tables.

    Raises:
        ResultsError: ``sweep_dir`` is not a sweep's results folder.
    """
    result, trials, curves = _read_all(sweep_dir)
    # An empty sweep still has the fixed columns (its parameters are unknown).
    first = next(iter(trials.values()), None)
    trials_df = _to_frame(trials.values(), first.schema if first is not None else trials_schema({}),
                          ["trial_id"])
    curves_df = _to_frame(curves.values(), CURVES_SCHEMA, ["trial_id", "checkpoint"])
    versions = frozenset((t.schema.metadata or {}).get(_VERSION_KEY, b"").decode()
                         for t in trials.values())
    contents = SweepContents(result, trials_df, curves_df, versions)
    trials_df.attrs["skipped"] = [str(p) for p in contents.skipped]
    return contents


def load_results(sweep_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The trials and curves tables of a sweep as pandas DataFrames.

    Only complete trials are loaded; corrupt parts and orphans are skipped with
    a :class:`ResultsWarning` naming how many (``--resume`` reruns them), and
    listed in ``trials.attrs["skipped"]``. Rows are sorted by trial id (and
    checkpoint), so the same results give the same frames.

    Raises:
        ResultsError: ``sweep_dir`` is not a sweep's results folder.
    """
    contents = read_sweep(sweep_dir)
    skipped, result = contents.skipped, contents.scan
    if skipped:
        warnings.warn(
            f"{result.sweep_dir}: skipped {len(skipped)} part files of "
            f"{len(result.incomplete)} incomplete trials ({', '.join(p.name for p in skipped[:5])}"
            f"{', ...' if len(skipped) > 5 else ''}); `--resume` reruns them",
            ResultsWarning, stacklevel=2)
    return contents.trials, contents.curves


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
        if not TRIAL_ID.match(trial_id):
            raise ConfigError(f"trial id {trial_id!r} is not a part name")
        # trials first: the trial stops counting as complete before its curves go.
        targets += [sweep_dir / t / part_name(trial_id) for t in ("trials", "curves")]
    for folder in ("trials", "curves"):
        targets += _parts(sweep_dir / folder)[1]
    for path in targets:
        try:
            if path.exists():
                path.unlink()
                removed.append(path)
        except OSError as exc:
            raise results_error("remove", path, exc) from exc
    for folder in ("trials", "curves"):
        if (sweep_dir / folder).is_dir():
            fsync_dir(sweep_dir / folder)
    return removed
