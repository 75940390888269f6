"""``[tracking]``: a sweep's seeds as runs of W&B, MLflow and TensorBoard, read back with each
tracker's own reader and compared with the tables; off by default; refused when not installed."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sweep.errors import ConfigError
from sweep.spec import TRACKERS, TrackingSection, load_spec, parse_spec
from sweep.spec.trackers import installed
from sweep.tracking import Trackers, open_trackers
from sweep.tracking.runs import SeedRun

HEAD = """
name = "tracked"
[data]
datasets = ["digits"]
shots = [4]
seeds = [1, 2]
[budget]
limit = 80
[search]
methods = ["bbt"]
[methods.bbt]
params = { popsize = 10, intrinsic_dim_text = 50 }
"""
# MLflow's SQL store on the SQLAlchemy Optuna brings.
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")

#: The trackers installed here (the ``test`` extra installs all three; a test of one that is
#: not skips, saying so).
INSTALLED = [name for name in TRACKERS if installed(name)]


def _tracked(trackers, extra: str = "", **kwargs):
    names = ", ".join(f'"{t}"' for t in trackers)
    return parse_spec(f"{HEAD}[tracking]\ntrackers = [{names}]\n{extra}", "tracked.toml", **kwargs)


def test_tracking_is_off_by_default():
    assert load_spec(None).tracking == TrackingSection()
    assert parse_spec(HEAD, "plain.toml").tracking.trackers == ()


@pytest.mark.parametrize("tracker", sorted(TRACKERS))
def test_a_tracker_that_is_not_installed_is_refused_naming_its_package(tracker, monkeypatch):
    module, package = TRACKERS[tracker]
    monkeypatch.setitem(sys.modules, module, None)  # what Python does for a missing module
    with pytest.raises(ConfigError, match=rf"tracking\.trackers: {tracker} is not installed here: "
                                          rf"pip install {package} \(or promptsweep\[{tracker}\]\)"):
        _tracked([tracker])
    # a cluster's specification checked on another machine (--plan) is not refused
    assert _tracked([tracker], check_paths=False).tracking.trackers == (tracker,)
    # nor is it at launch, where the driver opens the trackers
    with pytest.raises(ConfigError, match=rf"pip install {package}"):
        open_trackers(TrackingSection(trackers=(tracker,)), "x", Path("unused"))


@pytest.mark.parametrize("extra, problem", [
    ('wandb_mode = "cloud"', "tracking.wandb_mode: unknown W&B mode 'cloud'"),
    ('project = ""', "tracking.project: must not be empty"),
    ("mlflow = 1", "tracking.mlflow: unknown key 'mlflow'"),
])
def test_a_bad_tracking_section_fails_with_its_key(extra, problem):
    with pytest.raises(ConfigError, match=problem):
        _tracked(["tensorboard"], extra)
    with pytest.raises(ConfigError, match="unknown tracker 'mlfow'; did you mean 'mlflow'"):
        _tracked(["mlfow"])


# ------------------------------------------------------------------ readers


def wandb_records(path: Path) -> list:
    """The records of a W&B run file (``run-<id>.wandb``): a 7-byte header, then LevelDB's log
    format (32 KiB blocks of chunks: crc32c, length, type), each record a protobuf ``Record``."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, chunks, records = 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunks += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            records.append(wandb_internal_pb2.Record.FromString(chunks))
            chunks = b""
    return records


def _items(items) -> dict:
    """A record's items: key (a flat one, or a nested key's parts joined by "/") -> value."""
    return {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}


def wandb_run(path: Path) -> dict:
    """The run, its config, history and final summary, as W&B's offline run file holds them."""
    run: dict = {"history": [], "summary": {}, "config": {}}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.update(group=record.run.run_group, name=record.run.display_name,
                       job_type=record.run.job_type)
            run["config"].update(_items(record.run.config.update))
        elif kind == "history":
            run["history"].append(_items(record.history.item))
        elif kind == "summary":
            run["summary"].update(_items(record.summary.update))
        elif kind == "exit":
            run["exit_code"] = record.exit.exit_code
    return run


# ------------------------------------------------------------------ a tracked sweep


@pytest.fixture(scope="module")
def tracked(ray_session, tmp_path_factory):
    """A sweep of one BBT setting on two seeds, logged to every tracker installed here."""
    from sweep.tuning import run_sweep

    tmp = tmp_path_factory.mktemp("tracked")
    spec = _tracked(INSTALLED, base_dir=tmp)
    path = run_sweep(spec, results_root=tmp / "results", progress=False)
    trials = pd.read_parquet(path / "trials").set_index("trial_id")
    curves = pd.read_parquet(path / "curves").sort_values(["trial_id", "checkpoint"])
    return path / "tracking", trials, curves


@pytest.mark.ray
@pytest.mark.slow
def test_mlflow_holds_one_run_per_seed_with_its_checkpoints_and_row(tracked):
    mlflow = pytest.importorskip("mlflow", reason="the test extra installs mlflow-skinny")
    folder, trials, curves = tracked
    client = mlflow.MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tracked")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == set(trials.index)
    for trial_id, run in runs.items():
        row = trials.loc[trial_id]
        assert run.info.status == "FINISHED"
        assert run.data.tags["sample_id"] == row["sample_id"]  # grouped by setting
        assert run.data.params["method"] == "bbt" and run.data.params["seed"] == str(row["seed"])
        assert run.data.params["dataset"] == "digits" and run.data.params["model"] == row["model"]
        assert run.data.params["param_popsize"] == "10"
        curve = curves[curves["trial_id"] == trial_id]
        for metric in ("val_acc", "test_acc", "train_loss", "val_loss", "queries_images"):
            history = client.get_metric_history(run.info.run_id, metric)
            assert [m.step for m in history] == list(curve["queries_candidate_evals"])
            np.testing.assert_allclose([m.value for m in history], curve[metric])
        assert run.data.metrics["row/best_val_test_acc"] == pytest.approx(row["best_val_test_acc"])
        assert run.data.tags["row/status"] == "completed"
        assert run.data.tags["row/config_hash"] == row["config_hash"]


@pytest.mark.ray
@pytest.mark.slow
def test_tensorboard_event_files_hold_each_seed_under_its_setting(tracked):
    pytest.importorskip("tensorboard", reason="reading event files needs tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    folder, trials, curves = tracked
    for trial_id, row in trials.iterrows():
        events = EventAccumulator(str(folder / "tensorboard" / row["sample_id"] / trial_id),
                                  size_guidance={"scalars": 0, "tensors": 0})
        events.Reload()
        curve = curves[curves["trial_id"] == trial_id]
        for metric in ("val_acc", "test_acc", "train_loss", "val_loss"):
            scalars = events.Scalars(metric)
            assert [s.step for s in scalars] == list(curve["queries_candidate_evals"])
            np.testing.assert_allclose([s.value for s in scalars], curve[metric], rtol=1e-6)
        assert events.Scalars("row/best_val_acc")[0].value == pytest.approx(row["best_val_acc"])
        text = events.Tensors("row/text_summary")[0].tensor_proto.string_val[0].decode()
        assert json.loads(text.strip("`\n"))["trial_id"] == trial_id
        start = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        hparams = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
        assert hparams["method"].string_value == "bbt" and hparams["seed"].number_value == row["seed"]


@pytest.mark.ray
@pytest.mark.slow
def test_wandb_offline_runs_hold_config_history_and_summary(tracked):
    pytest.importorskip("wandb", reason="the test extra installs wandb")
    folder, trials, curves = tracked
    runs = [wandb_run(p) for p in sorted((folder / "wandb").glob("offline-run-*/run-*.wandb"))]
    assert sorted(r["name"] for r in runs) == sorted(trials.index)
    for run in runs:
        row = trials.loc[run["name"]]
        assert run["group"] == row["sample_id"] and run["job_type"] == "bbt"
        assert run["config"]["seed"] == row["seed"] and run["config"]["param_popsize"] == 10
        assert run["config"]["dataset"] == "digits" and run["config"]["model"] == row["model"]
        curve = curves[curves["trial_id"] == run["name"]]
        history = pd.DataFrame(run["history"])
        assert list(history["queries_candidate_evals"]) == list(curve["queries_candidate_evals"])
        for metric in ("val_acc", "test_acc", "train_loss", "val_loss"):
            np.testing.assert_allclose(history[metric], curve[metric])
        assert run["summary"]["row/best_val_acc"] == pytest.approx(row["best_val_acc"])
        assert run["summary"]["row/status"] == "completed" and run["exit_code"] == 0


def test_a_tracker_that_fails_is_reported_and_the_others_go_on(tmp_path):
    pytest.importorskip("mlflow", reason="the test extra installs mlflow-skinny")
    from sweep.budget import CheckpointRecord, QueryCounts
    from sweep.results import ResultsWriter, TrialRecord

    checkpoints = [CheckpointRecord(checkpoint=i, queries=QueryCounts(10 * i, 10 * i, 40 * i, 4),
                                    train_loss=1.0, val_acc=0.5, test_acc=0.4, wall_s=float(i))
                   for i in range(1, 9)]
    writer = ResultsWriter(tmp_path, "t", {})
    records = [TrialRecord(trial_id=f"t-0001-s{seed}", sweep="t", sample_id="t-0001",
                           method="bbt", model="m", dataset="digits", shots=4, seed=seed,
                           budget_unit="calls", budget=80, queries=checkpoints[-1].queries,
                           checkpoints=checkpoints) for seed in (1, 2)]
    rows = [writer.write(record) for record in records]
    assert SeedRun.of(records[0], rows[0]).step == "queries_calls"
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")  # MLflow's store cannot be made under a file
    said: list[str] = []
    section = TrackingSection(trackers=("mlflow", "tensorboard"),
                              mlflow_uri=f"sqlite:///{blocked / 'mlflow.db'}")
    trackers = open_trackers(section, "t", tmp_path / "t", said.append)
    assert isinstance(trackers, Trackers)
    for record, row in zip(records, rows):
        trackers.log(record, row)
    trackers.close()
    assert len(said) == 1 and said[0].startswith("tracking: mlflow failed on t-0001-s1")
    assert len(list((tmp_path / "t" / "tracking" / "tensorboard" / "t-0001").glob("t-0001-s*/events.*"))) == 2
