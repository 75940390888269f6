"""Results as Parquet: schemas, atomic part files, corrupt parts, resume, determinism (no Ray)."""

from __future__ import annotations

import errno
import math
import os
import subprocess
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import methods
from methods.base import SearchSpace
from sweep.budget import UNITS, BudgetSpec, QueryCounts
from sweep.errors import ConfigError, PromptTuningError
from sweep.budget import CheckpointRecord
from sweep.run import run_method
from sweep.testing import QuadraticObjective
from sweep.results import (
    CURVES_SCHEMA,
    ResultsError,
    ResultsWarning,
    ResultsWriter,
    TrialRecord,
    checkpoint_from_row,
    config_hash,
    git_rev,
    load_results,
    package_versions,
    remove_incomplete,
    scan,
    trials_schema,
)

# The union over two methods: bbt has sigma0 and popsize, cbbt has lr, antithetic and kind.
PARAMS = {"sigma0": "float", "popsize": "int", "lr": "float", "antithetic": "bool", "kind": "str"}
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def _q(n: int) -> QueryCounts:
    return QueryCounts(candidate_evals=n, calls=2 * n, images=12 * n, text_sequences=3 * n)


def _checkpoints(vals, tests) -> list[CheckpointRecord]:
    return [CheckpointRecord(i, _q(10 * (i + 1)), 1.0 / (i + 1), v, t, 0.5 * (i + 1))
            for i, (v, t) in enumerate(zip(vals, tests))]


def _identity(trial_id: str, method: str = "bbt", **kw):
    base = dict(trial_id=trial_id, sweep="s1", sample_id=f"sample-{trial_id}", method=method,
                model="embedded", dataset="digits", shots=4, seed=1, budget_unit="candidate_evals",
                budget=30, device="cpu", started_at=T0, config={"method": method, "seed": 1})
    return {**base, **kw}


def _bbt_record(trial_id: str = "a0") -> TrialRecord:
    cps = _checkpoints([0.5, 0.8, 0.8], [0.4, 0.6, 0.9])
    return TrialRecord(**_identity(trial_id), params={"sigma0": 1, "popsize": np.int64(20)},
                       queries=cps[-1].queries, checkpoints=cps, stop_reasons={"budget": "spent"},
                       wall_s=1.5)


def _cbbt_record(trial_id: str = "b0") -> TrialRecord:
    cps = _checkpoints([0.3, 0.7], [0.2, 0.5])
    return TrialRecord(**_identity(trial_id, "cbbt"), estimator="spsa",
                       params={"lr": 0.01, "antithetic": True, "kind": "text"},
                       queries=cps[-1].queries, checkpoints=cps, nonfinite_losses=2, wall_s=2.0)


@pytest.fixture
def writer(tmp_path) -> ResultsWriter:
    return ResultsWriter(tmp_path / "results", "s1", PARAMS)


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------- schemas


def test_trials_schema_has_every_column_with_explicit_types():
    schema = trials_schema(PARAMS)
    assert schema.names[:3] == ["trial_id", "sweep", "sample_id"]
    assert schema.names[-5:] == ["param_antithetic", "param_kind", "param_lr", "param_popsize",
                                 "param_sigma0"]
    types = {f.name: f.type for f in schema}
    for name in ("shots", "seed", "budget", "nonfinite_losses", *(f"queries_{u}" for u in UNITS)):
        assert types[name] == pa.int64()
    for name in ("best_val_acc", "best_val_test_acc", "final_val_acc", "final_test_acc", "wall_s"):
        assert types[name] == pa.float64()
    assert types["black_box"] == pa.bool_() and types["started_at"] == pa.timestamp("us", "UTC")
    assert types["param_popsize"] == pa.int64() and types["param_antithetic"] == pa.bool_()
    assert not any(t == pa.null() for t in types.values())
    # The dict's order does not matter: every part of a sweep has one schema.
    assert trials_schema(dict(reversed(PARAMS.items()))).equals(schema)
    assert CURVES_SCHEMA.field("checkpoint").type == pa.int32()


@pytest.mark.parametrize("bad", [{"x": "double"}, {"a b": "int"}, {"": "str"}])
def test_trials_schema_refuses_unknown_types_and_names(bad):
    with pytest.raises(ConfigError):
        trials_schema(bad)


# ---------------------------------------------------------------- round trip


def test_round_trip_two_methods_with_different_parameters(writer):
    writer.write(_bbt_record())
    writer.write(_cbbt_record())
    # Every part has exactly the sweep's schema, nulls and all.
    for name in _files(writer.trials_dir):
        assert pq.read_schema(writer.trials_dir / name).equals(writer.trials_schema)
    for name in _files(writer.curves_dir):
        assert pq.read_schema(writer.curves_dir / name).equals(CURVES_SCHEMA)
    rows = {r["trial_id"]: r for r in pq.read_table(writer.trials_dir).to_pylist()}
    a, b = rows["a0"], rows["b0"]
    assert (a["param_sigma0"], a["param_popsize"], a["param_lr"], a["param_antithetic"],
            a["param_kind"]) == (1.0, 20, None, None, None)
    assert isinstance(a["param_sigma0"], float)
    assert (b["param_sigma0"], b["param_popsize"], b["param_lr"], b["param_antithetic"],
            b["param_kind"]) == (None, None, 0.01, True, "text")
    assert a["estimator"] is None and b["estimator"] == "spsa"
    assert a["status"] == "completed" and a["error"] is None and a["black_box"] is True
    assert [a[f"queries_{u}"] for u in UNITS] == [30, 60, 360, 90]
    assert (a["best_val_acc"], a["best_val_test_acc"], a["final_val_acc"], a["final_test_acc"]) \
        == (0.8, 0.6, 0.8, 0.9)
    assert a["stop_reasons"] == '{"budget":"spent"}' and b["nonfinite_losses"] == 2
    assert a["started_at"] == T0 and a["config_hash"] == config_hash({"seed": 1, "method": "bbt"})
    assert a["git_rev"] == git_rev()
    assert a["promptsweep_version"] == package_versions()["promptsweep"]

    trials, curves = load_results(writer.sweep_dir)
    assert list(trials["trial_id"]) == ["a0", "b0"]
    assert trials["shots"].dtype == np.int64 and trials["best_val_acc"].dtype == np.float64
    assert trials["black_box"].dtype == bool and str(trials["started_at"].dt.tz) == "UTC"
    assert math.isnan(trials.loc[0, "param_lr"]) and trials.loc[1, "param_lr"] == 0.01
    assert trials.attrs["skipped"] == []
    assert len(curves) == 5 and list(curves.columns) == CURVES_SCHEMA.names
    assert curves["checkpoint"].dtype == np.int32 and curves["queries_calls"].dtype == np.int64
    a_curve = curves[curves.trial_id == "a0"]
    assert list(a_curve["val_acc"]) == [0.5, 0.8, 0.8] and list(a_curve["checkpoint"]) == [0, 1, 2]


def test_pd_read_parquet_on_each_folder_returns_every_row_and_column(writer):
    # The first file (by name) is bbt, which lacks cbbt's parameters: pyarrow takes the
    # first file's schema, so this only works because every part has the union schema.
    writer.write(_bbt_record("a0"))
    writer.write(_cbbt_record("b0"))
    writer.write(_cbbt_record("b1"))
    trials = pd.read_parquet(writer.trials_dir)
    assert sorted(trials["trial_id"]) == ["a0", "b0", "b1"]
    assert {f"param_{n}" for n in PARAMS} <= set(trials.columns)
    assert sorted(trials["param_kind"].dropna()) == ["text", "text"]
    curves = pd.read_parquet(writer.curves_dir)
    assert len(curves) == 3 + 2 + 2 and set(curves.columns) == set(CURVES_SCHEMA.names)


def test_nan_is_stored_as_null_and_inf_is_kept(writer):
    cps = [CheckpointRecord(0, _q(5), float("nan"), float("nan"), float("nan"), 0.1),
           CheckpointRecord(1, _q(10), float("inf"), 0.5, 0.4, 0.2)]
    writer.write(TrialRecord(**_identity("n0"), queries=_q(10), checkpoints=cps))
    rows = pq.read_table(writer.curves_dir).to_pylist()
    assert rows[0]["train_loss"] is None and rows[0]["val_acc"] is None
    assert rows[1]["train_loss"] == float("inf")
    trial = pq.read_table(writer.trials_dir).to_pylist()[0]
    assert trial["best_val_acc"] == 0.5 and trial["best_val_test_acc"] == 0.4


# ---------------------------------------------------------------- failures as rows


def test_failed_trial_is_a_row_with_partial_curves(writer):
    cps = _checkpoints([0.4], [0.3])
    rec = TrialRecord.from_failure(RuntimeError("actor died"), queries=_q(14), checkpoints=cps,
                                   **_identity("f0"))
    writer.write(rec)
    writer.write(TrialRecord.from_failure("ConfigError: sigma0 must be positive",
                                          **_identity("f1", params={"sigma0": -1.0})))
    trials, curves = load_results(writer.sweep_dir)
    f0, f1 = trials.set_index("trial_id").loc["f0"], trials.set_index("trial_id").loc["f1"]
    assert f0["status"] == "failed" and f0["error"] == "RuntimeError: actor died"
    assert f0["queries_candidate_evals"] == 14 and f0["final_val_acc"] == 0.4
    assert f1["queries_images"] == 0 and math.isnan(f1["best_val_acc"]) and math.isnan(f1["wall_s"])
    assert f1["param_sigma0"] == -1.0
    assert list(curves["trial_id"]) == ["f0"]
    assert scan(writer.sweep_dir).complete == ("f0", "f1")


@pytest.mark.parametrize("kw,match", [
    (dict(status="failed"), "error"),
    (dict(status="weird"), "status"),
    (dict(trial_id="../x"), "trial id"),
    (dict(budget_unit="tokens"), "budget unit"),
    (dict(started_at=datetime(2026, 1, 1)), "timezone"),
    (dict(checkpoints=_checkpoints([0.1, 0.2], [0.1, 0.2])), "last checkpoint"),
])
def test_record_refuses_inconsistent_fields(kw, match):
    with pytest.raises(ConfigError, match=match):
        TrialRecord(**{**_identity("x0"), **kw})


def test_writer_refuses_undeclared_or_mistyped_parameters(writer):
    with pytest.raises(ConfigError, match="not in the sweep"):
        writer.write(TrialRecord(**_identity("x0"), params={"momentum": 0.9}))
    with pytest.raises(ConfigError, match="declared int"):
        writer.write(TrialRecord(**_identity("x0"), params={"popsize": 2.5}))
    with pytest.raises(ConfigError, match="sweep"):
        writer.write(TrialRecord(**_identity("x0", sweep="other")))
    with pytest.raises(ConfigError, match="'model' is required"):
        writer.write(TrialRecord(**_identity("x0", model=None)))
    assert _files(writer.trials_dir) == [] and _files(writer.curves_dir) == []


def test_epoch_seconds_and_worker_rows_are_accepted():
    rows = [{"checkpoint": 0, **{f"queries_{u}": 3 for u in UNITS}, "train_loss": 1.0,
             "val_acc": 0.5, "test_acc": 0.25, "wall_s": 0.1}]
    cps = [checkpoint_from_row(r) for r in rows]
    rec = TrialRecord(**_identity("e0", started_at=T0.timestamp()), queries=QueryCounts(3, 3, 3, 3),
                      checkpoints=cps)
    assert rec.started_at == T0 and rec.curves_rows()[0]["queries_images"] == 3
    with pytest.raises(ConfigError, match="lacks"):
        checkpoint_from_row({"checkpoint": 0})


# ---------------------------------------------------------------- atomic writes


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_at_rename_leaves_nothing(writer, monkeypatch):
    monkeypatch.setattr(os, "replace", _enospc)
    with pytest.raises(ResultsError, match="No space left on device") as info:
        writer.write(_bbt_record())
    assert isinstance(info.value, OSError) and isinstance(info.value, PromptTuningError)
    assert info.value.errno == errno.ENOSPC and "\n" not in str(info.value)
    assert _files(writer.trials_dir) == [] and _files(writer.curves_dir) == []


def test_disk_full_mid_write_leaves_nothing(writer, monkeypatch):
    real = pq.write_table

    def half_then_full(table, where, **kw):
        where.write(b"PAR1 partial bytes")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", half_then_full)
    with pytest.raises(ResultsError):
        writer.write(_bbt_record())
    assert _files(writer.trials_dir) == [] and _files(writer.curves_dir) == []
    monkeypatch.setattr(pq, "write_table", real)
    writer.write(_bbt_record())
    assert scan(writer.sweep_dir).complete == ("a0",)


def test_failing_trials_part_removes_the_curves_part(writer, monkeypatch):
    real, calls = os.replace, []

    def second_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(errno.EROFS, "Read-only file system")
        real(src, dst)

    monkeypatch.setattr(os, "replace", second_fails)
    with pytest.raises(ResultsError, match="Read-only file system"):
        writer.write(_bbt_record())
    assert Path(calls[0]).parent == writer.curves_dir  # curves first
    assert _files(writer.trials_dir) == [] and _files(writer.curves_dir) == []


def test_root_or_sweep_that_is_a_file_is_a_clear_error(tmp_path):
    root = tmp_path / "results"
    root.write_text("not a folder")
    with pytest.raises(ResultsError, match="not a folder"):
        ResultsWriter(root, "s1", PARAMS)
    root2 = tmp_path / "results2"
    root2.mkdir()
    (root2 / "s1").write_text("a file where the sweep goes")
    with pytest.raises(ResultsError, match="cannot create results folder"):
        ResultsWriter(root2, "s1", PARAMS)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes through chmod")
def test_read_only_folder_is_a_clear_error(writer):
    writer.trials_dir.chmod(0o500)
    try:
        with pytest.raises(ResultsError, match="cannot write"):
            writer.write(_bbt_record())
    finally:
        writer.trials_dir.chmod(0o700)
    assert _files(writer.trials_dir) == [] and _files(writer.curves_dir) == []


@pytest.mark.parametrize("name", ["..", "../x", "a/b", "", ".", "x\\..\\y"])
def test_sweep_name_escaping_root_is_refused(tmp_path, name):
    with pytest.raises(ConfigError):
        ResultsWriter(tmp_path, name, PARAMS)


def test_symlink_escaping_root_is_refused(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "root" / "s1").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="outside"):
        ResultsWriter(tmp_path / "root", "s1", PARAMS)


def test_resume_with_another_schema_is_refused(writer, tmp_path):
    writer.write(_bbt_record())
    ResultsWriter(tmp_path / "results", "s1", dict(reversed(PARAMS.items())))  # same union: fine
    with pytest.raises(ResultsError, match="different schema"):
        ResultsWriter(tmp_path / "results", "s1", {"sigma0": "float"})


# ---------------------------------------------------------------- corrupt parts and resume


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_parts_are_detected_skipped_and_rerun(writer):
    for rec in (_bbt_record("a0"), _bbt_record("a1"), _cbbt_record("b0"), _cbbt_record("b1")):
        writer.write(rec)
    _truncate(writer.trials_dir / "part-a1.parquet")
    _truncate(writer.curves_dir / "part-b1.parquet")
    found = scan(writer.sweep_dir)
    assert found.complete == ("a0", "b0") and found.incomplete == ("a1", "b1")
    assert found.corrupt == (writer.curves_dir / "part-b1.parquet",
                             writer.trials_dir / "part-a1.parquet")
    assert "2 incomplete" in found.summary()

    with pytest.warns(ResultsWarning, match="skipped 2 part files"):
        trials, curves = load_results(writer.sweep_dir)
    assert list(trials["trial_id"]) == ["a0", "b0"] and set(curves["trial_id"]) == {"a0", "b0"}
    assert len(trials.attrs["skipped"]) == 2

    # Resume: remove what is incomplete, rerun it; nothing lost, nothing duplicated.
    removed = remove_incomplete(writer.sweep_dir, found.incomplete)
    assert len(removed) == 4
    for rec in (_bbt_record("a1"), _cbbt_record("b1")):
        writer.write(rec)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trials, curves = load_results(writer.sweep_dir)
    assert list(trials["trial_id"]) == ["a0", "a1", "b0", "b1"] and len(curves) == 10
    assert len(pd.read_parquet(writer.trials_dir)) == 4


def test_orphan_curves_and_leftover_temporaries_are_incomplete(writer):
    writer.write(_bbt_record("a0"))
    writer.write(_bbt_record("a1"))
    (writer.trials_dir / "part-a1.parquet").unlink()  # a crash between the two renames
    tmp = writer.trials_dir / ".part-a2.parquet.x1y2.tmp"  # a crash before a rename
    tmp.write_bytes(b"PAR1 half")
    found = scan(writer.sweep_dir)
    assert found.complete == ("a0",) and found.incomplete == ("a1",)
    assert found.orphans == (writer.curves_dir / "part-a1.parquet",)
    assert found.temporaries == (tmp,)
    assert len(pd.read_parquet(writer.trials_dir)) == 1  # pyarrow skips hidden files
    with pytest.warns(ResultsWarning):
        _, curves = load_results(writer.sweep_dir)
    assert set(curves["trial_id"]) == {"a0"}
    remove_incomplete(writer.sweep_dir, found.incomplete)
    assert _files(writer.trials_dir) == ["part-a0.parquet"]
    assert _files(writer.curves_dir) == ["part-a0.parquet"]


def test_a_part_of_another_trial_is_corrupt(writer):
    writer.write(_bbt_record("a0"))
    (writer.trials_dir / "part-a0.parquet").rename(writer.trials_dir / "part-zz.parquet")
    found = scan(writer.sweep_dir)
    assert writer.trials_dir / "part-zz.parquet" in found.corrupt and found.complete == ()


def test_loading_a_missing_or_empty_sweep(tmp_path):
    with pytest.raises(ResultsError, match="not a sweep's results folder"):
        load_results(tmp_path / "nope")
    writer = ResultsWriter(tmp_path, "empty", PARAMS)
    trials, curves = load_results(writer.sweep_dir)
    assert len(trials) == 0 and "trial_id" in trials.columns and list(curves.columns) == \
        CURVES_SCHEMA.names


# ---------------------------------------------------------------- provenance


def test_config_hash_is_stable_across_dict_order():
    a = {"method": "bbt", "params": {"sigma0": 1.0, "popsize": 20}, "seeds": (1, 2)}
    b = {"seeds": [1, 2], "params": {"popsize": np.int64(20), "sigma0": 1.0}, "method": "bbt"}
    assert config_hash(a) == config_hash(b) and len(config_hash(a)) == 64
    assert config_hash(a) != config_hash({**a, "method": "cbbt"})
    with pytest.raises(ConfigError):
        config_hash({"f": object()})


def test_git_rev_never_fails(monkeypatch):
    assert isinstance(git_rev(), str) and git_rev()

    def missing(*a, **k):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", missing)
    assert git_rev() == "unknown"


# ---------------------------------------------------------------- real runs, determinism


def _real_record(trial_id: str, seed: int) -> tuple[TrialRecord, QueryCounts]:
    space = SearchSpace(dim=20)
    method = methods.REGISTRY.create("bbt", {"sigma0": 0.1}, space, seed)
    objective = QuadraticObjective(20, BudgetSpec(limit=12 * method.ask_size), seed=1)

    def scorer(_, z):
        value = float(objective.value(z[None] if z.ndim == 1 else z)[0])
        return 1.0 / (1.0 + value), 1.0 / (2.0 + value), value

    run = run_method(method, objective, scorer, checkpoints=8)
    rec = TrialRecord.from_run(run, **_identity(trial_id, seed=seed, params={"sigma0": 0.1},
                                                started_at=datetime.now(timezone.utc)))
    return rec, objective.used


def test_counts_are_the_oracles_and_same_seeds_give_identical_tables(tmp_path):
    frames = []
    for root in ("r1", "r2"):
        writer = ResultsWriter(tmp_path / root, "s1", PARAMS)
        for i, seed in enumerate((1, 2)):
            rec, used = _real_record(f"t{i}", seed)
            writer.write(rec)
            row = pq.read_table(writer.trials_dir / f"part-t{i}.parquet").to_pylist()[0]
            assert [row[f"queries_{u}"] for u in UNITS] == [used[u] for u in UNITS]
            curve = pq.read_table(writer.curves_dir / f"part-t{i}.parquet").to_pylist()
            assert len(curve) == len(rec.checkpoints) > 1
            assert [curve[-1][f"queries_{u}"] for u in UNITS] == [used[u] for u in UNITS]
        frames.append(load_results(writer.sweep_dir))
    (t1, c1), (t2, c2) = frames
    pd.testing.assert_frame_equal(t1.drop(columns=["wall_s", "started_at"]),
                                  t2.drop(columns=["wall_s", "started_at"]))
    pd.testing.assert_frame_equal(c1.drop(columns=["wall_s"]), c2.drop(columns=["wall_s"]))
    assert t1["best_val_acc"].notna().all() and (t1["status"] == "completed").all()
