"""Failures that doom a sweep end it: oracle actors that cannot be set up on their node, and a
sweep whose every trial failed. Each ends non-zero with one line naming the cause and what to
fix; the tracebacks are kept in ``results/<sweep>/logs/`` and their last lines shown."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ray import cloudpickle

from bench import simulated
from bench.simulated import simulated_server
from sweep.errors import DataError
from sweep.oracle import ActorSetupError, OracleServer, PromptLayout, TaskKey
from sweep.results import TrialOutcome
from sweep.spec import ModelSpec, parse_spec
from sweep.tuning import DEVICES, run_sweep


def _setup_error(tmp_path: Path, stage: str) -> ActorSetupError:
    """The error of an OracleServer (in this process) that fails at ``stage``."""
    (tmp_path / "a-file").write_text("")
    (tmp_path / "root" / "train").mkdir(parents=True)  # the layout's folder, without images
    args = {"device": ("cuda", None, ()),
            "model": ("cpu", None, ()),
            "cache folder": ("cpu", str(tmp_path / "a-file" / "pixels"), ()),
            "data": ("cpu", None, (("folder", str(tmp_path / "root")),))}[stage]
    device, pixels, tasks = args
    model = (ModelSpec(name="promptsweep-tiny", checkpoint=str(tmp_path / "missing.pt"))
             if stage == "model" else ModelSpec())
    server = OracleServer(model, device, 1, pixels, tasks=tasks)
    with pytest.raises(ActorSetupError) as info:  # at every request, and where it runs
        server.serve("info", 0, TaskKey("digits", None, 4, 1), PromptLayout(n_text=2))
    with pytest.raises(ActorSetupError):
        server.place()
    return info.value


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("stage, cause, fix", [
    ("device", "ModelError: device 'cuda' was asked for but CUDA is not available",
     "[resources] gpus_per_actor"),
    ("model", "ModelError: checkpoint", "[model]"),
    ("cache folder", "DataError: cannot create the folder of decoded images", "[data] cache"),
    ("data", "DataError:", "[data] root"),
])
def test_an_actor_that_cannot_be_set_up_says_where_why_and_what_to_fix(tmp_path, stage, cause, fix):
    error = _setup_error(tmp_path, stage)
    message = str(error)
    assert "\n" not in message
    assert message.startswith("the oracle actor on node ")
    assert f"could not set up its {stage}: {cause}" in message
    assert message.rpartition("; fix ")[2].startswith(fix)
    assert "Traceback" in error.details  # kept for the sweep's logs


# ---------------------------------------------------------------- whole sweeps

SWEEP = """\
name = "{name}"
[data]
shots = [1]
seeds = [1]
{data}
[budget]
limit = 20
[search]
methods = ["bbt"]
[methods.bbt]
params = {{ popsize = 5, intrinsic_dim_text = 20 }}
[resources]
gpus_per_actor = 0
"""


@pytest.mark.ray
@pytest.mark.slow
def test_a_data_root_missing_on_the_actors_node_ends_the_sweep_before_any_trial(
        ray_session, tmp_path, capsys, monkeypatch):
    from sweep.launch import main

    root = tmp_path / "root"
    (root / "train").mkdir(parents=True)  # in its layout where the spec is read...
    # ...but empty where the actor runs: the driver's check of the data is what a node
    # without the data would not have had.
    monkeypatch.setattr("sweep.tuning.driver.check_inputs", lambda spec, progress: None)
    spec = tmp_path / "broken.toml"
    spec.write_text(SWEEP.format(name="broken", data=f'datasets = ["folder"]\nroot = "{root}"'))
    assert main([str(spec), "--results", str(tmp_path / "results"), "--quiet"]) == 2
    out, err = capsys.readouterr()
    err = err.strip()
    assert "\n" not in err
    assert re.match(r"error: the oracle actor on node [\d.]+ \(pid \d+\) could not set up its "
                    "data: DataError: ", err), err
    assert str(root) in err
    assert err.endswith("fix [data] root: every node reads the data at that path")
    log = tmp_path / "results" / "broken" / "logs" / "actor-setup.log"
    assert "Traceback" in log.read_text()
    assert f"the last lines of its log ({log})" in out
    assert not list((tmp_path / "results" / "broken" / "trials").glob("*.parquet"))


class _RaisesAsItStarts(simulated_server(DEVICES["a10g"], 0.0)):
    def __init__(self, *args, **kwargs):
        raise RuntimeError("no device here")


class _EveryRequestFails(simulated_server(DEVICES["a10g"], 0.0)):
    def evaluate(self, *args, **kwargs):
        raise DataError("cannot read image /data/x.png: truncated")


def _simulated_sweep(tmp_path: Path, server: type) -> Path:
    cloudpickle.register_pickle_by_value(simulated)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    spec = parse_spec(SWEEP.format(name="sim", data='datasets = ["Caltech101"]\nroot = "/x"'),
                      "sim.toml", check_paths=False)
    return run_sweep(spec, results_root=tmp_path, progress=False, server=server)


@pytest.mark.ray
@pytest.mark.slow
def test_an_actor_whose_constructor_raises_ends_the_sweep_naming_the_cause(ray_session, tmp_path):
    with pytest.raises(ActorSetupError, match=r"^the oracle actor on node [\d.]+ died as it "
                                              "started: RuntimeError: no device here$"):
        _simulated_sweep(tmp_path, _RaisesAsItStarts)


@pytest.mark.ray
@pytest.mark.slow
def test_a_sweep_whose_every_trial_failed_ends_non_zero_with_the_logs_kept(
        ray_session, tmp_path, capsys):
    from sweep.tuning.driver import SweepFailedError

    with pytest.raises(SweepFailedError, match="every one of the sweep's 1 trials failed "
                                               r"\(first: bbt-Caltech101-1shot-000-s1: DataError"):
        _simulated_sweep(tmp_path, _EveryRequestFails)
    trials = pd.read_parquet(tmp_path / "sim" / "trials")  # the rows are written all the same
    assert trials["status"].tolist() == ["failed"]
    log = (tmp_path / "sim" / "logs" / "bbt-Caltech101-1shot-000-s1.log").read_text()
    assert "Traceback" in log and "cannot read image /data/x.png" in log
    assert "bbt-Caltech101-1shot-000-s1 failed: DataError" in capsys.readouterr().out


def test_a_trial_that_meets_an_actor_that_cannot_be_set_up_stops_the_sweep_without_rows(tmp_path):
    from tqdm import tqdm

    from sweep.results import ResultsWriter
    from sweep.tuning.callbacks import ResultsCallback
    from sweep.tuning.groups import GROUP, SAMPLE
    from sweep.tuning.plan import plan_sweep

    spec = parse_spec(SWEEP.format(name="mid", data=""), "mid.toml")
    plan = plan_sweep(spec, tmp_path)
    writer = ResultsWriter(tmp_path, spec.name, plan.param_types)
    counters = {"queries": 0, "best_val": float("-inf"), "failed": 0, "rows": 0,
                "first_error": None}
    callback = ResultsCallback(writer, spec, plan.groups, tqdm(disable=True), counters)
    message = "the oracle actor on node 10.0.0.7 (pid 1) could not set up its data: ..."
    outcome = TrialOutcome(seed=1, status="failed", error=f"ActorSetupError: {message}",
                           log="Traceback ...", fatal=True)
    trial = type("Trial", (), {"trial_id": "t", "config": {GROUP: 0, SAMPLE: 0}})()
    callback.on_trial_result(trial, {"outcomes": [outcome.to_dict()]})
    callback.on_trial_end(trial, None)
    assert isinstance(callback.error, ActorSetupError) and str(callback.error) == message
    assert not list(writer.trials_dir.glob("*.parquet"))  # --resume runs it again
    assert (tmp_path / "mid" / "logs" / "bbt-digits-1shot-000-s1.log").read_text() == \
        "Traceback ...\n"
    assert np.isinf(counters["best_val"])
