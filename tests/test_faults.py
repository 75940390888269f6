"""What happens when things go wrong: bad input, non-finite losses, dying actors, failing writes."""

from __future__ import annotations

import errno
import io
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from ray import cloudpickle

from bench import simulated
from bench.simulated import simulated_server
from methods.base import Evaluation
from sweep.budget import BudgetSpec
from sweep.errors import DataError
from sweep.oracle import ClipOracle, OraclePool, OracleServer, PoolError, PromptLayout, TaskKey
from sweep.run import NonFiniteLossError, rank_nonfinite_worst
from sweep.spec import parse_spec
from sweep.spec import ModelSpec
from sweep.tuning import DEVICES, TrialSetting, run_setting


def test_nonfinite_losses_rank_worst_of_their_request():
    ev = Evaluation(losses=np.array([0.5, np.nan, 2.0, np.inf, -np.inf]), accuracies=np.zeros(5))
    fixed, replaced = rank_nonfinite_worst(ev)
    np.testing.assert_array_equal(fixed.losses, [0.5, 2.0, 2.0, 2.0, 2.0])
    assert replaced == 3 and fixed.accuracies is ev.accuracies
    same, none = rank_nonfinite_worst(Evaluation(losses=np.array([1.0, 2.0])))
    assert none == 0 and np.array_equal(same.losses, [1.0, 2.0])
    with pytest.raises(NonFiniteLossError, match="all 2 losses"):
        rank_nonfinite_worst(Evaluation(losses=np.array([np.nan, np.inf])))


@pytest.fixture
def nan_oracle(monkeypatch):
    """The real oracle, but the first candidate of every request comes back NaN."""
    original = ClipOracle.evaluate

    def evaluate(self, *args, **kwargs):
        ev = original(self, *args, **kwargs)
        losses = ev.losses.copy()
        losses[0] = np.nan
        return Evaluation(**{**ev.__dict__, "losses": losses})

    monkeypatch.setattr(ClipOracle, "evaluate", evaluate)


def test_a_trial_survives_nan_losses_counts_the_queries_and_records_them(nan_oracle):
    setting = TrialSetting("bbt", {"popsize": 6, "intrinsic_dim_text": 20}, "digits", None, 4, (1,),
                           BudgetSpec(limit=60), checkpoints=8)
    *_, (_, outcomes) = run_setting(setting)
    out = outcomes[0]
    assert out.status == "ok", out.error
    assert out.nonfinite_losses == 10  # one per request: 60 queries / 6 per ask
    assert out.result.used.candidate_evals == 60  # the NaN queries still count
    assert out.report().to_dict()["nonfinite_losses"] == 10
    assert np.isfinite([r.train_loss for r in out.records]).all()


def test_launch_refuses_a_bad_spec_with_one_line_and_status_2(tmp_path, capsys):
    from sweep.launch import main

    spec = tmp_path / "bad.toml"
    spec.write_text('name = "x"\n[budget]\nlimt = 10\n[search]\nmethods = ["bbt"]\n')
    assert main([str(spec), "--results", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "budget.limt" in err[0] and "limit" in err[0]
    assert not (tmp_path / "results").exists()


# ---------------------------------------------------------------- bad input through launch

BAD_SWEEP = """\
name = "bad"
[budget]
limit = 40
[search]
methods = ["{method}"]
"""


def _write_png(path: Path, seed: int, truncated: bool = False) -> None:
    """A real 8x8 PNG; ``truncated`` keeps its first half only, as an interrupted copy would."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    data = buffer.getvalue()
    path.write_bytes(data[: len(data) // 2] if truncated else data)


def _class_folders(root: Path, corrupt: str | None = None) -> Path:
    """root/{train,val,test}/{cat,dog}/a.png; ``corrupt`` ("train/dog") is a truncated PNG."""
    for i, where in enumerate(f"{s}/{c}" for s in ("train", "val", "test") for c in ("cat", "dog")):
        _write_png(root / where / "a.png", i, truncated=where == corrupt)
    return root


def _folder_data(root: Path) -> str:
    return f'[data]\ndatasets = ["folder"]\nroot = "{root}"\nshots = [1]\n'


def _missing_root(tmp: Path) -> tuple[str, str]:
    return _folder_data(tmp / "nowhere"), "does not exist"


def _empty_root(tmp: Path) -> tuple[str, str]:
    (tmp / "data").mkdir()
    return _folder_data(tmp / "data"), f"{tmp / 'data' / 'train'}, which does not exist"


def _images_without_class_folders(tmp: Path) -> tuple[str, str]:
    for split in ("train", "test"):
        _write_png(tmp / "data" / split / "a.png", 0)
    return _folder_data(tmp / "data"), "has no class folders"


def _coop_without_split_file(tmp: Path) -> tuple[str, str]:
    _write_png(tmp / "data" / "oxford_pets" / "images" / "Abyssinian_1.jpg", 0)
    data = _folder_data(tmp / "data").replace('"folder"', '"OxfordPets"')
    return data, "split_zhou_OxfordPets.json does not exist"


def _corrupt_training_image(tmp: Path) -> tuple[str, str]:
    _class_folders(tmp / "data", corrupt="train/dog")
    bad = tmp / "data" / "train" / "dog" / "a.png"
    return _folder_data(tmp / "data"), f"cannot read image {bad}: image file is truncated"


def _corrupt_checkpoint(tmp: Path) -> tuple[str, str]:
    (tmp / "w.pt").write_bytes(b"PK\x03\x04 half of a zip archive")
    return f'[model]\ncheckpoint = "{tmp / "w.pt"}"\n', "w.pt cannot be read as a weights-only"


def _checkpoint_of_another_architecture(tmp: Path) -> tuple[str, str]:
    import torch

    torch.manual_seed(0)
    other = torch.nn.Sequential(torch.nn.Linear(4, 4))  # other keys and shapes
    torch.save(other.state_dict(), tmp / "w.pt")
    return (f'[model]\ncheckpoint = "{tmp / "w.pt"}"\n',
            "does not match architecture 'promptsweep-tiny': keys missing")


BAD_INPUT = {
    "missing data root": ("bbt", _missing_root),
    "empty data root": ("bbt", _empty_root),
    "images without class folders": ("bbt", _images_without_class_folders),
    "CoOp layout without its split file": ("bbt", _coop_without_split_file),
    "corrupt training image": ("bbt", _corrupt_training_image),
    "corrupt checkpoint": ("bbt", _corrupt_checkpoint),
    "checkpoint of another architecture": ("bbt", _checkpoint_of_another_architecture),
    "unknown cbbt estimator": ("cbbt", lambda tmp: (
        '[methods.cbbt]\nparams = { estimator = "sphre" }\n', "methods.cbbt.params.estimator")),
    "unknown zo estimator": ("zo", lambda tmp: (
        '[methods.zo.space]\nestimator = { choices = ["sphere", "gausian"] }\n',
        "unknown estimator 'gausian'")),
}


@pytest.fixture
def no_ray(monkeypatch):
    """Starting Ray fails the test: nothing may start before the input is checked."""
    def must_not_run(*args, **kwargs):
        raise AssertionError("Ray was started")

    monkeypatch.setattr("sweep.tuning.driver.start_ray", must_not_run)


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_fails_before_any_work_with_one_line_and_status_2(case, tmp_path, capsys,
                                                                     no_ray):
    from sweep.launch import main

    method, make = BAD_INPUT[case]
    extra, needle = make(tmp_path)
    spec = tmp_path / "bad.toml"
    spec.write_text(BAD_SWEEP.format(method=method) + extra)
    results = tmp_path / "results"
    assert main([str(spec), "--results", str(results), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert not results.exists()


def test_a_corrupt_test_image_fails_the_trial_naming_the_file(tmp_path):
    # Test images are read when a trial first evaluates on them, not up front.
    root = _class_folders(tmp_path, corrupt="test/dog")
    setting = TrialSetting("zero-shot", {}, "folder", str(root), 1, (1,), BudgetSpec(limit=10))
    *_, (_, outcomes) = run_setting(setting)
    assert outcomes[0].status == "failed"
    assert outcomes[0].error == (f"DataError: cannot read image {root / 'test' / 'dog' / 'a.png'}: "
                                 "image file is truncated")


def test_a_trial_whose_seeds_all_fail_to_start_still_reports():
    # Ray Tune ends the whole sweep when a trial returns without reporting its metric.
    setting = TrialSetting("bbt", {}, "folder", None, 4, (1, 2), BudgetSpec(limit=10))
    reports = list(run_setting(setting))
    assert len(reports) == 1
    _, outcomes = reports[0]
    assert [o.status for o in outcomes] == ["failed", "failed"]
    assert all("needs a data root" in o.error for o in outcomes)


# ---------------------------------------------------------------- oracle actors that die

DOOMED_SEED = 2


class _Dies:
    """Kills its own process (as the out-of-memory killer would) on every training request
    of a task drawn with DOOMED_SEED; serves everything else."""

    def evaluate(self, key: TaskKey, *args, **kwargs):
        if key.seed == DOOMED_SEED:
            os._exit(1)
        return super().evaluate(key, *args, **kwargs)


class DyingServer(_Dies, OracleServer):
    """An oracle actor of the embedded model that dies as ``_Dies`` says."""


# The sweep below uses simulated GPUs (no model: an actor restarts in about a second, not
# the several a model's load takes), arithmetic not slept.
DyingSimulated = type("DyingSimulated", (_Dies, simulated_server(DEVICES["a10g"], 0.0)), {})


def _dying_pool(retries: int) -> OraclePool:
    """One actor; each actor restarted and each request resubmitted ``retries`` times."""
    # Ray's workers cannot import this test module (tests/ is not on their path): send
    # the class itself.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return OraclePool(ModelSpec(), 1, server=DyingServer, threads_per_actor=1,
                      max_restarts=retries, max_task_retries=retries)


@pytest.mark.ray
@pytest.mark.slow
def test_a_request_that_kills_its_actor_fails_alone_and_a_fresh_actor_serves_the_rest(
        ray_session, tmp_path):
    pool = _dying_pool(retries=0)  # no Ray restarts: test_pool.py and the sweep below have them
    try:
        stale = pickle.loads(pickle.dumps(pool))  # a trial's copy, taken before the replacement
        first = pool.submit(0, "pid", 0)
        layout = PromptLayout(n_text=2)
        doomed = pool.oracle(TaskKey("digits", None, 4, DOOMED_SEED), layout)
        text = np.zeros((3, *doomed.text_shape), np.float32)
        with pytest.raises(PoolError, match="gone for good") as info:
            doomed.evaluate(text=text)
        assert "\n" not in str(info.value)
        assert doomed.used.candidate_evals == 3  # counted once, before dispatch
        fresh = pool.submit(0, "pid", 0)
        assert fresh != first
        assert stale.submit(0, "pid", 0) == fresh  # resubmitted to the replacement, not failed
        ok = pool.oracle(TaskKey("digits", None, 4, 1), layout)
        assert ok.evaluate(text=text).losses.shape == (3,)
        # An unreadable test image comes back as the oracle's own one-line DataError.
        root = _class_folders(tmp_path, corrupt="test/dog")
        folder = pool.oracle(TaskKey("folder", str(root), 1, 1), layout)
        with pytest.raises(DataError) as info:
            folder.evaluate_split("test", text=text)
        assert str(info.value) == (f"cannot read image {root / 'test' / 'dog' / 'a.png'}: "
                                   "image file is truncated")
    finally:
        pool.shutdown()


@pytest.mark.ray
@pytest.mark.slow
def test_a_trial_whose_actor_keeps_dying_is_a_failed_row_and_the_sweep_goes_on(
        ray_session, tmp_path, monkeypatch):
    from sweep import tuning

    cloudpickle.register_pickle_by_value(simulated)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setattr("sweep.tuning.driver.OraclePool", lambda spec, actors, **kw: OraclePool(
        spec, 1, **{**kw, "max_restarts": 1, "max_task_retries": 1}))
    spec = parse_spec(f"""
        name = "dying"
        [data]
        datasets = ["Caltech101"]
        root = "/nonexistent"
        shots = [4]
        seeds = [1, {DOOMED_SEED}]
        [budget]
        limit = 40
        [search]
        methods = ["bbt", "zero-shot"]
        [methods.bbt]
        params = {{ popsize = 5, intrinsic_dim_text = 20 }}
        """, "dying.toml", check_paths=False)
    path = tuning.run_sweep(spec, results_root=tmp_path, progress=False, server=DyingSimulated)
    trials = pd.read_parquet(path / "trials").set_index("trial_id")
    doomed = trials.loc[f"bbt-Caltech101-4shot-000-s{DOOMED_SEED}"]
    assert doomed["status"] == "failed"
    assert doomed["error"].startswith("PoolError: oracle actor 0 died serving this request and "
                                      "is gone for good (max_restarts=1)")
    # The other seed of the same trial goes on with the fresh actor; the later
    # zero-shot trial is served by it too.
    assert trials.loc["bbt-Caltech101-4shot-000-s1", "status"] == "completed"
    assert trials.loc["bbt-Caltech101-4shot-000-s1", "queries_candidate_evals"] == 40
    zero_shot = trials[trials["method"] == "zero-shot"]
    assert len(zero_shot) == 2 and (zero_shot["status"] == "completed").all()


# ---------------------------------------------------------------- results that cannot be written

GOOD_SWEEP = """\
name = "ok"
[data]
shots = [4]
seeds = [1]
[budget]
limit = 40
[search]
methods = ["zero-shot", "bbt"]
"""


def _read_only(monkeypatch, *folders: Path) -> None:
    """Make ``folders`` read-only. Root ignores file modes, so when the tests run as root the
    calls that create entries in them fail as the kernel makes them fail for anyone else."""
    for folder in folders:
        folder.chmod(0o555)
    if os.geteuid() != 0:
        return

    def refuse(real):
        def call(path, *args, **kwargs):
            if any(Path(os.fsdecode(path)).is_relative_to(f) for f in folders):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))
            return real(path, *args, **kwargs)
        return call

    monkeypatch.setattr(os, "mkdir", refuse(os.mkdir))
    monkeypatch.setattr(os, "open", refuse(os.open))  # tempfile.mkstemp's


@pytest.mark.parametrize("existing", [False, True], ids=["new sweep", "interrupted sweep"])
def test_a_read_only_results_folder_fails_before_any_work(existing, tmp_path, capsys,
                                                          monkeypatch, no_ray):
    from sweep.launch import main

    spec = tmp_path / "ok.toml"
    spec.write_text(GOOD_SWEEP)
    results = tmp_path / "results"
    # A new sweep goes in a read-only root; an interrupted one left its (empty) folders.
    folders = [results / "ok" / "trials", results / "ok" / "curves"] if existing else [results]
    for folder in folders:
        folder.mkdir(parents=True)
    _read_only(monkeypatch, *folders)
    try:
        assert main([str(spec), "--results", str(results), "--quiet"]) == 2
    finally:
        for folder in folders:
            folder.chmod(0o755)
    err = capsys.readouterr().err.strip().splitlines()
    action = "write in results folder" if existing else "create results folder"
    assert len(err) == 1 and f"cannot {action}" in err[0] and "Permission denied" in err[0], err
    assert [p for p in results.rglob("*") if p.is_file()] == []


@pytest.mark.ray
@pytest.mark.slow
def test_a_full_disk_stops_the_sweep_with_one_line_and_no_partial_part(ray_session, tmp_path,
                                                                       capsys, monkeypatch):
    import pyarrow.parquet as pq

    from sweep.launch import main

    def half_then_full(table, where, **kwargs):
        where.write(b"PAR1 partial bytes")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", half_then_full)
    spec = tmp_path / "ok.toml"
    spec.write_text(GOOD_SWEEP)
    assert main([str(spec), "--results", str(tmp_path / "results"), "--quiet"]) == 2
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].endswith("No space left on device"), err
    sweep_dir = tmp_path / "results" / "ok"
    for table in ("trials", "curves"):
        assert list((sweep_dir / table).iterdir()) == []  # no part, no temporary
    # The first trial's write failed: the sweep stopped there, the other group never ran.
    assert "done:" not in out
    ran = [p.name for p in (sweep_dir / ".tune" / "ok").glob("tune_trainable_*")]
    assert len(ran) == 1, ran


# ---------------------------------------------------------------- --smoke-test

SMOKE = """\
name = "full"
[data]
shots = [4]
seeds = [1, 2]
[budget]
limits = [200, 400]
[search]
methods = ["bbt"]
samples = 3
[methods.bbt]
params = { popsize = 5, intrinsic_dim_text = 20 }
[methods.bbt.budget]
limit = 300
"""


def test_a_smoke_test_plans_one_seed_one_setting_and_one_small_budget(tmp_path, capsys):
    """What --smoke-test cuts (budget levels and a method's own budget included); a smoke
    test runs for real in tests/test_readme.py (the quick start's sweep)."""
    from sweep.launch import SMOKE_LIMIT, main

    spec = tmp_path / "full.toml"
    spec.write_text(SMOKE)
    results = tmp_path / "results"
    assert main([str(spec), "--smoke-test", "--dry-run", "--results", str(results)]) == 0
    plan = capsys.readouterr().out
    assert f"bbt-digits-4shot: 1 settings x 1 seeds, budget {SMOKE_LIMIT} candidate_evals, 8 " \
           "checkpoints" in plan and "levels" not in plan, plan
    assert "sweep 'full-smoke'" in plan
