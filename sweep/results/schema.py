"""The two tables of a sweep's results: their Parquet schemas, column by column.

``results/README.md`` documents every column. Every part of one sweep has the
same explicit schema (hyperparameters are the union over the sweep's
methods, null where a method lacks one): pyarrow takes the first file's
schema when it reads a folder, which is what makes
``pd.read_parquet("results/<sweep>/trials")`` work, and a column that is all
None would otherwise be written as type null and break the merge.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import pyarrow as pa

from sweep.budget import UNITS
from sweep.errors import ConfigError

__all__ = ["BUDGET_RUNS", "CURVES_SCHEMA", "PARAM_TYPES", "SCHEMA_VERSION", "STATUSES",
           "query_column", "trials_schema"]

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
#: 2: the restarts column; 3: method_version; 4: budget_run; 5: val_loss (curves),
#: best_val_loss and final_val_loss (trials); 6: method_digest.
SCHEMA_VERSION = "6"
#: How a trial's budget levels are obtained: "curve", read off its one run's checkpoints;
#: "per-budget", a run planned for its ``budget`` alone, one of ``[budget] limits``.
BUDGET_RUNS = ("curve", "per-budget")
_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def query_column(unit: str) -> str:
    """The column of the queries used in ``unit``: ``queries_<unit>``."""
    return f"queries_{unit}"


def _field(name: str, type_: pa.DataType, nullable: bool = True) -> pa.Field:
    return pa.field(name, type_, nullable=nullable)


# Columns of the trials table before the param_<name> columns, in order.
_TRIALS_FIELDS: tuple[pa.Field, ...] = (
    _field("trial_id", pa.string(), False),
    _field("sweep", pa.string(), False),
    _field("sample_id", pa.string(), False),
    _field("method", pa.string(), False),
    _field("method_version", pa.int64(), False),
    _field("method_digest", pa.string()),
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
    _field("budget_run", pa.string(), False),
    *(_field(query_column(u), pa.int64(), False) for u in UNITS),
    _field("best_val_acc", pa.float64()),
    _field("best_val_test_acc", pa.float64()),
    _field("final_val_acc", pa.float64()),
    _field("final_test_acc", pa.float64()),
    _field("best_val_loss", pa.float64()),
    _field("final_val_loss", pa.float64()),
    _field("stop_reasons", pa.string(), False),
    _field("nonfinite_losses", pa.int64(), False),
    _field("restarts", pa.int64(), False),
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
        *(_field(query_column(u), pa.int64(), False) for u in UNITS),
        _field("train_loss", pa.float64()),
        _field("val_acc", pa.float64()),
        _field("test_acc", pa.float64()),
        _field("wall_s", pa.float64()),
        _field("val_loss", pa.float64()),
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
