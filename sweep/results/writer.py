"""Writing a sweep's results: the driver's one writer, one atomic pair of part files per trial.

Curves go first, then the trials part, so a trial is complete iff both of
its parts exist and read (``sweep.results.reader``).

Example::

    writer = ResultsWriter(Path("results"), "coop16", {"sigma": "float", "popsize": "int"})
    writer.write(TrialRecord.from_run(run, trial_id="t0001", sweep="coop16", ...))
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sweep.errors import ConfigError
from sweep.results.files import (
    ResultsError,
    part_name,
    probe,
    results_error,
    sweep_dir,
    write_atomic,
)
from sweep.results.provenance import Provenance
from sweep.results.records import TrialRecord
from sweep.results.schema import CURVES_SCHEMA, trials_schema

__all__ = ["ResultsWriter"]


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
        self.sweep_dir = sweep_dir(Path(root), sweep)
        self.trials_dir = self.sweep_dir / "trials"
        self.curves_dir = self.sweep_dir / "curves"
        for folder in (self.trials_dir, self.curves_dir):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise results_error("create results folder", folder, exc) from exc
            probe(folder)
        self._check_existing_schema()
        self.provenance = Provenance.current()

    def remove_if_empty(self) -> None:
        """Remove the folders this writer made, if nothing was written in them."""
        for folder in (self.trials_dir, self.curves_dir, self.sweep_dir):
            try:
                folder.rmdir()
            except OSError:
                return  # written in (or a resumed sweep's): kept

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

    def write(self, record: TrialRecord) -> dict[str, Any]:
        """Write ``record``'s curves part, then its trials part, each atomically; returns the
        trials row written.

        Rewriting a trial id replaces both parts.

        Raises:
            ConfigError: the record does not fit the sweep (name, parameters).
            ResultsError: a part cannot be written (disk full, read-only); no
                part of this trial is left behind.
        """
        if record.sweep != self.sweep:
            raise ConfigError(f"trial {record.trial_id} belongs to sweep {record.sweep!r}, "
                              f"not {self.sweep!r}")
        row = record.trials_row(self.param_types, self.provenance)
        trials = pa.Table.from_pylist([row], schema=self.trials_schema)
        curves = pa.Table.from_pylist(record.curves_rows(), schema=CURVES_SCHEMA)
        for table in (trials, curves):
            # from_pylist accepts None in a non-nullable column; the file must not.
            for f in table.schema:
                if not f.nullable and table.column(f.name).null_count:
                    raise ConfigError(f"trial {record.trial_id}: column {f.name!r} is required "
                                      "but the record has no value for it")
        name = part_name(record.trial_id)
        curves_path, trials_path = self.curves_dir / name, self.trials_dir / name
        try:
            write_atomic(curves, curves_path)
        except OSError as exc:
            raise results_error("write curves part", curves_path, exc) from exc
        try:
            write_atomic(trials, trials_path)
        except OSError as exc:
            # Without its trials part the trial is incomplete anyway; dropping both
            # parts (the rename may have happened before the folder fsync failed)
            # leaves the folder as if the write never started.
            for path in (trials_path, curves_path):
                try:
                    path.unlink(missing_ok=True)
                except OSError:
                    pass
            raise results_error("write trials part", trials_path, exc) from exc
        return row
