"""Trials that lose their process, sweeps whose launcher stops, actors that never start.

On the session's Ray: a trial's worker process killed mid-run is started again by Tune and
goes on from its last budget checkpoint; a sweep stopped mid-trial resumes its trial from
the checkpoint on ``--resume``. Both end with the tables of a run never stopped (merging
off). A launch whose actors ask for GPUs this machine lacks fails at once with one line, by
default for a real model too; on a cluster an autoscaler serves, after ``placement_timeout_s``.
Neither leaves a results folder.
"""

from __future__ import annotations

import os
import signal
import stat
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from ray import cloudpickle

from bench import simulated
from bench.simulated import simulated_server
from sweep.results import ResultsError
from sweep.spec import parse_spec
from sweep.tuning import DEVICES, run_sweep

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SPEC = """
name = "ckpt"
[data]
datasets = ["Caltech101"]
root = "/nonexistent"
shots = [4]
seeds = [1]
[budget]
limit = 120
checkpoints = 8
[search]
methods = ["bbt"]
samples = 1
[methods.bbt]
params = { popsize = 5, intrinsic_dim_text = 20 }
"""
CURVE = ["checkpoint", "queries_candidate_evals", "train_loss", "val_acc", "test_acc"]


class SlowServer(simulated_server(DEVICES["a10g"], 0.0)):
    """A simulated GPU (no model to load: each sweep starts in seconds less) whose training
    requests take 0.1 s: time to stop a trial in."""

    def evaluate(self, *args, **kwargs):
        time.sleep(0.1)
        return super().evaluate(*args, **kwargs)


def _sweep(root: Path, resume: bool = False) -> Path:
    # Ray's workers cannot import this test module: send the class itself.
    cloudpickle.register_pickle_by_value(simulated)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return run_sweep(parse_spec(SPEC, "ckpt.toml", check_paths=False), results_root=root, resume=resume,
                     progress=False, server=SlowServer)


def _tables(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.read_parquet(folder / "trials"), pd.read_parquet(folder / "curves")


@pytest.fixture(scope="module")
def never_stopped(ray_session, tmp_path_factory):
    return _tables(_sweep(tmp_path_factory.mktemp("whole")))


def _assert_same_run(tables, reference) -> None:
    (trials, curves), (ref_trials, ref_curves) = tables, reference
    assert len(trials) == 1 and trials["trial_id"].is_unique
    assert trials["status"].tolist() == ["completed"]
    assert trials["queries_candidate_evals"].tolist() == ref_trials["queries_candidate_evals"].tolist()
    assert ref_trials["restarts"].tolist() == [0] and trials["restarts"].tolist() == [1]
    pd.testing.assert_frame_equal(curves[CURVE].reset_index(drop=True),
                                  ref_curves[CURVE].reset_index(drop=True))


def _parent(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    return 0


def _descends_from_this_session(pid: int) -> bool:
    """Whether ``pid`` was started under this test process (its local Ray's raylet is its
    child): other sessions' Ray workers on the machine are not ours to kill."""
    here = os.getpid()
    while pid > 1:
        pid = _parent(pid)
        if pid == here:
            return True
    return False


def _trial_workers() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(
                    b"ray::ImplicitFunc") and _descends_from_this_session(int(entry.name)):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def test_a_trial_whose_process_is_lost_goes_on_from_its_checkpoint(never_stopped, tmp_path):
    killed: list[int] = []

    def kill_at_first_checkpoint() -> None:
        folder = tmp_path / "ckpt" / "checkpoints"
        deadline = time.time() + 120
        while time.time() < deadline and not list(folder.glob("*.pkl")):
            time.sleep(0.02)
        for pid in _trial_workers():
            os.kill(pid, signal.SIGKILL)  # as the node's loss, or the OOM killer, would
            killed.append(pid)

    killer = threading.Thread(target=kill_at_first_checkpoint, daemon=True)
    killer.start()
    folder = _sweep(tmp_path)
    killer.join()
    assert killed, "the trial ended before its process could be killed"
    _assert_same_run(_tables(folder), never_stopped)
    assert not (folder / "checkpoints").exists()  # removed once the rows were written


def _modes(folder: Path, pattern: str) -> set[int]:
    return {stat.S_IMODE(p.stat().st_mode) for p in folder.glob(pattern)}


def test_a_stopped_sweep_resumes_its_trial_from_the_checkpoint(never_stopped, tmp_path,
                                                                monkeypatch, umask_022):
    from sweep.tuning.callbacks import ResultsCallback

    seen = ResultsCallback.on_trial_result

    def stop_after_two_checkpoints(self, trial, result):  # as a launcher that dies would
        seen(self, trial, result)
        if result["checkpoint"] >= 1:
            self.error = ResultsError("the launcher stopped")

    monkeypatch.setattr(ResultsCallback, "on_trial_result", stop_after_two_checkpoints)
    with pytest.raises(ResultsError, match="launcher stopped"):
        _sweep(tmp_path)
    folder = tmp_path / "ckpt"
    assert not list((folder / "trials").glob("*.parquet"))  # no partial rows
    assert [p.name for p in (folder / "checkpoints").glob("*.pkl")] == ["bbt-Caltech101-4shot-000.pkl"]
    assert _modes(folder, "checkpoints/*.pkl") == {0o600}  # the user's own, whatever the umask
    monkeypatch.setattr(ResultsCallback, "on_trial_result", seen)
    with pytest.raises(Exception, match="--resume"):
        _sweep(tmp_path)
    _assert_same_run(_tables(_sweep(tmp_path, resume=True)), never_stopped)
    # The results themselves, as other tools' files, for the colleagues of a shared folder.
    assert _modes(folder, "*/part-*.parquet") | _modes(folder, "*.json") == {0o644}


def test_a_checkpoint_planted_in_a_sweeps_folder_is_never_run_and_its_setting_starts_over(
        never_stopped, tmp_path, planted):
    from sweep.results import ResultsWarning

    code, marker = planted
    folder = tmp_path / "ckpt"
    for table in ("trials", "curves", "checkpoints"):  # a sweep stopped mid-trial, as it leaves
        (folder / table).mkdir(parents=True)  # its folder, given a checkpoint not its user's
    path = folder / "checkpoints" / "bbt-Caltech101-4shot-000.pkl"
    path.write_bytes(code)
    with pytest.warns(ResultsWarning, match=f"checkpoint {path} refused"):
        tables = _tables(_sweep(tmp_path, resume=True))
    assert not marker.exists(), "the planted code ran"
    (trials, curves), (_, ref_curves) = tables, never_stopped
    assert trials["restarts"].tolist() == [0] and trials["status"].tolist() == ["completed"]
    assert trials["sample_id"].tolist() == ["bbt-Caltech101-4shot-000"]
    pd.testing.assert_frame_equal(curves[CURVE].reset_index(drop=True),
                                  ref_curves[CURVE].reset_index(drop=True))
    assert not (folder / "checkpoints").exists()


def _gpu_spec(tmp_path: Path, resources: str, model: str = "") -> Path:
    spec = tmp_path / "gpus.toml"
    spec.write_text(SPEC.replace('name = "ckpt"', 'name = "gpus"').replace(
        'datasets = ["Caltech101"]\nroot = "/nonexistent"\n', "") + model
        + "[resources]\n" + resources)
    return spec


@pytest.mark.parametrize("resources, real_model, source", [
    ("gpus_per_actor = 1\n", False, "[resources] gpus_per_actor"),
    ("", True, "the default for a model other than the embedded one: [resources] "
               "gpus_per_actor left out")])
def test_a_gpu_request_a_local_cpu_ray_cannot_meet_is_refused_before_any_wait(
        ray_session, tiny_vit, tmp_path, capsys, resources, real_model, source):
    import torch

    from sweep.launch import main

    model = ""
    if real_model:  # an architecture of open_clip's (registered here) with its weights
        torch.save(tiny_vit.model.state_dict(), tmp_path / "w.pt")
        model = f'[model]\nname = "test-tiny-vit"\ncheckpoint = "{tmp_path / "w.pt"}"\n'
    # A placement timeout of an hour: the refusal must not come from waiting.
    spec = _gpu_spec(tmp_path, resources + "placement_timeout_s = 3600\n", model)
    assert main([str(spec), "--results", str(tmp_path / "results"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert err == (f"error: 1 oracle actor of 1 GPU each ({source}), but this machine's local "
                   "Ray has 0 GPUs and no autoscaler to add any; set [resources] gpus_per_actor "
                   "= 0 to run the actors on CPUs, or join a cluster with GPUs (--address)")
    assert not (tmp_path / "results" / "gpus").exists()


def test_actors_an_autoscaler_never_places_fail_with_one_line_after_the_timeout(
        ray_session, tmp_path, capsys, monkeypatch):
    from sweep.launch import main

    monkeypatch.setattr("sweep.tuning.placement.autoscaling", lambda: True)
    spec = _gpu_spec(tmp_path, "gpus_per_actor = 1\nplacement_timeout_s = 3\n")
    assert main([str(spec), "--results", str(tmp_path / "results"), "--quiet"]) == 2
    out, err = capsys.readouterr()
    assert "an autoscaler may start GPU nodes; waiting up to [resources] placement_timeout_s" in out
    err = err.strip()
    assert "\n" not in err
    assert err.startswith("error: 1 of 1 oracle actors had not started after 3 s "
                          "([resources] placement_timeout_s): each asks for 1 GPUs"), err
    assert "the cluster has 0 GPUs" in err
    assert not (tmp_path / "results" / "gpus").exists()
