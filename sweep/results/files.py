"""The folder of a sweep's results, and the file operations that keep it whole.

Layout::

    <root>/<sweep>/trials/part-<trial_id>.parquet   one row: the trial
    <root>/<sweep>/curves/part-<trial_id>.parquet   one row per budget checkpoint
    <root>/<sweep>/optuna.db                        the groups' Optuna studies (``study_storage``)
    <root>/<sweep>/sweep.json                       the sweep's description and metric (``info``)
    <root>/<sweep>/actors.json                      where each oracle actor ran (``ACTORS_FILE``)
    <root>/<sweep>/logs/<trial id>.log              a failed trial's traceback

Each part is written to a hidden temporary file in its folder, fsynced and
renamed into place (``write_atomic``), so a part either exists whole or not
at all. Files are made as other tools make theirs, under the user's umask
(``temporary``); only the trials' checkpoints are 0600 (``sweep.checkpoints``).
The writer and the reader share this module.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from sweep.errors import ConfigError, PromptTuningError

__all__ = ["ACTORS_FILE", "PART", "STUDY_FILE", "TMP_SUFFIX", "TRIAL_ID", "ResultsError", "fsync_dir",
           "part_name", "probe", "results_error", "study_storage", "sweep_dir", "temporary",
           "write_atomic"]

#: A part file's name; its group ``id`` is the trial id.
PART = re.compile(r"^part-(?P<id>[A-Za-z0-9][A-Za-z0-9._-]*)\.parquet$")
#: What a trial id may be (it names the part files).
TRIAL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: The suffix of temporary files (hidden: their names start with ".").
TMP_SUFFIX = ".tmp"
#: The SQLite file of the sweep's Optuna studies, one per sampling group (``sweep.tuning.studies``).
STUDY_FILE = "optuna.db"
#: Where each oracle actor ran (its node and device) and, once the sweep ends, what it did
#: (JSON, written by the driver: ``sweep.tuning``).
ACTORS_FILE = "actors.json"


class ResultsError(PromptTuningError, OSError):
    """The results folder cannot be written or read (full, read-only, not a folder, foreign)."""


def part_name(trial_id: str) -> str:
    """The file name of ``trial_id``'s parts (the same in trials/ and curves/)."""
    return f"part-{trial_id}.parquet"


def fsync_dir(folder: Path) -> None:
    # The rename is durable only once the folder's entry is on disk.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary(final: Path) -> tuple[int, str]:
    """A new hidden temporary file beside ``final`` (fd, path), made as other tools make their
    files: 0666 less the user's umask (0644 under umask 022), so that a group's shared results
    folder stays readable to colleagues (``tempfile.mkstemp`` makes 0600)."""
    while True:
        # Hidden name: pyarrow's folder reader skips files starting with '.', so a temporary
        # left by a hard kill never breaks pd.read_parquet.
        tmp = final.parent / f".{final.name}.{secrets.token_hex(4)}{TMP_SUFFIX}"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), str(tmp)
        except FileExistsError:
            continue


def write_atomic(table: pa.Table, final: Path) -> None:
    """Write ``table`` to ``final`` whole or not at all (temporary, fsync, rename, fsync folder)."""
    fd, tmp = temporary(final)
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
    fsync_dir(final.parent)


def probe(folder: Path) -> None:
    """Create and remove a file in ``folder``: an existing folder may be read-only."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".probe.", suffix=TMP_SUFFIX, dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise results_error("write in results folder", folder, exc) from exc


def results_error(action: str, path: Path, exc: OSError) -> ResultsError:
    reason = exc.strerror or str(exc) or type(exc).__name__
    err = ResultsError(f"cannot {action} {path}: {reason}")
    err.errno = exc.errno  # callers may still test errno.ENOSPC and friends
    return err


def sweep_dir(root: Path, sweep: str) -> Path:
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


def study_storage(results_dir: str | Path) -> str:
    """The Optuna storage URL of the studies of the sweep in ``results_dir``: SQLite, absolute.

    Each sampling group's study is named by the group's tag (``bbt-digits-16shot``)::

        optuna.load_study(study_name="bbt-digits-16shot", storage=study_storage("results/x"))
    """
    return f"sqlite:///{(Path(results_dir) / STUDY_FILE).resolve()}"
