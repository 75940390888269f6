"""A sweep's results as Parquet: a trials table and a curves table, one part file pair per trial.

The driver writes (``ResultsWriter``, each part atomically), anyone reads
(``load_results``; ``pd.read_parquet("results/<sweep>/trials")`` works too).
``TrialOutcome`` is what a trial worker reports of each seed and
``TrialRecord`` what the driver makes of it. Beside the tables, each sampling
group's Optuna study lives in ``optuna.db`` (``study_storage`` gives its URL;
``sweep.tuning.studies`` writes it). Nothing here imports torch, Ray or
Optuna: reports open fast on a laptop.
"""

from sweep.results.files import ACTORS_FILE, STUDY_FILE, ResultsError, study_storage
from sweep.results.info import INFO_FILE, SweepInfo, describe_actors, read_info, write_info
from sweep.results.provenance import (
    Provenance,
    canonical_json,
    config_hash,
    git_rev,
    package_versions,
)
from sweep.results.reader import (
    ResultsWarning,
    ScanResult,
    SweepContents,
    load_results,
    read_sweep,
    remove_incomplete,
    scan,
)
from sweep.results.records import (
    TrialOutcome,
    TrialRecord,
    checkpoint_from_row,
    checkpoint_row,
    seed_status,
)
from sweep.results.schema import (
    CURVES_SCHEMA,
    PARAM_TYPES,
    SCHEMA_VERSION,
    STATUSES,
    query_column,
    trials_schema,
)
from sweep.results.writer import ResultsWriter

__all__ = [
    "ACTORS_FILE",
    "CURVES_SCHEMA",
    "INFO_FILE",
    "PARAM_TYPES",
    "SCHEMA_VERSION",
    "STATUSES",
    "STUDY_FILE",
    "Provenance",
    "ResultsError",
    "ResultsWarning",
    "ResultsWriter",
    "ScanResult",
    "SweepContents",
    "SweepInfo",
    "TrialOutcome",
    "TrialRecord",
    "canonical_json",
    "checkpoint_from_row",
    "checkpoint_row",
    "config_hash",
    "describe_actors",
    "git_rev",
    "load_results",
    "package_versions",
    "query_column",
    "read_info",
    "read_sweep",
    "remove_incomplete",
    "scan",
    "seed_status",
    "study_storage",
    "trials_schema",
    "write_info",
]
