"""A trial cut short goes on from its last budget checkpoint and ends as if never stopped.

The trial's own code path (``run_setting`` on the embedded model, no Ray): run a
setting through; run it again, keep its state at a checkpoint as the checkpoint
store would (bytes), drop everything, and go on from those bytes. Rows, counts and
the recommendation must be the same; the resumed seeds say they restarted.
"""

from __future__ import annotations

import numpy as np
import pytest

import methods
from sweep.budget import BudgetSpec
from sweep.tuning.trial import TrialSetting, TrialState, run_setting

pytestmark = pytest.mark.slow

#: One of each kind: CMA-ES on text and visual prompts, ES on text, SPSA on mini-batches,
#: and CBBT's estimator with its adapter (torch, its own generator).
SETTINGS = {
    "bpt-vlm": ({"popsize": 6, "intrinsic_dim_text": 20, "intrinsic_dim_visual": 20},
                BudgetSpec(unit="candidate_evals", limit=60)),
    "bbt": ({"popsize": 5, "intrinsic_dim_text": 20}, BudgetSpec(unit="candidate_evals", limit=50)),
    "zip": ({}, BudgetSpec(unit="calls", limit=40)),
    "cbbt": ({"q": 4}, BudgetSpec(unit="candidate_evals", limit=50)),
}


def _final(setting, resume=None):
    *_, (index, outcomes) = run_setting(setting, resume=resume)
    return index, outcomes


@pytest.mark.parametrize("method", sorted(SETTINGS))
def test_a_trial_resumed_from_its_checkpoint_ends_as_one_never_stopped(method):
    params, budget = SETTINGS[method]
    setting = TrialSetting(method, params, "digits", None, 4, (0, 1), budget, checkpoints=4)
    last, whole = _final(setting)

    run = run_setting(setting)
    for _ in range(2):  # two checkpoints, then the process is lost
        index, outcomes = next(run)
    blob = TrialState(setting, index + 1, [o.saved() for o in outcomes]).to_bytes()
    run.close()
    del run, outcomes
    resumed_last, resumed = _final(setting, TrialState.from_bytes(blob))

    assert resumed_last == last
    for a, b in zip(whole, resumed):
        assert (a.seed, a.status, b.status) == (b.seed, "ok", "ok"), (a.error, b.error)
        assert [r.queries for r in a.records] == [r.queries for r in b.records]
        for field in ("val_acc", "test_acc", "train_loss"):
            np.testing.assert_array_equal([getattr(r, field) for r in a.records],
                                          [getattr(r, field) for r in b.records], err_msg=field)
        np.testing.assert_array_equal(a.result.recommendation, b.result.recommendation)
        assert a.result.used == b.result.used == a.records[-1].queries
        assert (a.restarts, b.restarts) == (0, 1) and b.report().restarts == 1


PLAN_SPEC = """
name = "plan"
[data]
shots = [4]
seeds = [1, 2]
[budget]
limit = 40
[search]
methods = ["bbt"]
samples = 3
"""


def _checkpointed(tmp_path, sample_id: str, limit: int = 40, version: int | None = None) -> None:
    from sweep.checkpoints import CheckpointStore, key_file
    from sweep.tuning.trial import SeedOutcome

    setting = TrialSetting("bbt", {"sigma0": 0.5}, "digits", None, 4, (1, 2),
                           BudgetSpec(unit="candidate_evals", limit=limit), checkpoints=8,
                           method_version=methods.REGISTRY.version("bbt") if version is None
                           else version)
    state = TrialState(setting, 3, [SeedOutcome(1), SeedOutcome(2)])
    for table in ("trials", "curves"):  # as the driver's writer leaves a sweep's folder
        (tmp_path / "plan" / table).mkdir(parents=True, exist_ok=True)
    CheckpointStore(str(tmp_path / "plan"), str(key_file())).put(sample_id, state.header(),
                                                                  state.to_bytes())


def test_a_checkpointed_setting_is_planned_to_go_on_and_new_settings_take_other_ids(tmp_path):
    from sweep.errors import ConfigError
    from sweep.spec import parse_spec
    from sweep.tuning import plan_sweep

    spec = parse_spec(PLAN_SPEC, "plan.toml")
    _checkpointed(tmp_path, "bbt-digits-4shot-001")  # setting 001 was cut short; 000 never began
    with pytest.raises(ConfigError, match="1 checkpoints; pass --resume"):
        plan_sweep(spec, tmp_path)
    plan = plan_sweep(spec, tmp_path, resume=True)
    resumed, fresh = plan.groups
    assert (resumed.sample_id, resumed.resumes, resumed.seeds) == ("bbt-digits-4shot-001", True, (1, 2))
    assert resumed.params == {"sigma0": 0.5}
    assert (fresh.samples, fresh.offset) == (2, 2)  # two more settings, numbered 002 and 003
    assert "bbt-digits-4shot-001: go on from its checkpoint (seeds 1, 2)" in plan.describe()
    assert plan.trials == 6 and not plan.stale_checkpoints


@pytest.mark.parametrize("change", ["budget", "version"])
def test_a_checkpoint_of_another_specification_is_not_resumed(tmp_path, change):
    from sweep.results import ResultsWarning
    from sweep.spec import parse_spec
    from sweep.tuning import plan_sweep

    # the budget has changed since, or the method is another version of it now
    _checkpointed(tmp_path, "bbt-digits-4shot-000", **(
        {"limit": 80} if change == "budget" else {"version": methods.REGISTRY.version("bbt") + 1}))
    with pytest.warns(ResultsWarning, match="different specification"):
        plan = plan_sweep(parse_spec(PLAN_SPEC, "plan.toml"), tmp_path, resume=True)
    assert plan.stale_checkpoints == ["bbt-digits-4shot-000"]
    assert [(g.sample_id, g.samples) for g in plan.groups] == [(None, 3)]


@pytest.mark.parametrize("how", ["a pickle", "another key", "altered"])
def test_a_planted_checkpoint_is_never_unpickled_by_plan_or_dry_run_and_is_not_resumed(
        tmp_path, planted, how):
    from sweep.checkpoints import seal
    from sweep.launch import main
    from sweep.results import ResultsWarning
    from sweep.spec import parse_spec
    from sweep.tuning import plan_sweep

    code, marker = planted
    sample_id = "bbt-digits-4shot-001"
    _checkpointed(tmp_path, sample_id)  # an authentic checkpoint of a real setting, replaced:
    path = tmp_path / "plan" / "checkpoints" / f"{sample_id}.pkl"
    if how == "a pickle":  # as checkpoints were before they were signed
        path.write_bytes(code)
    elif how == "another key":  # a colleague's, or a forger's: a well-formed signed file
        path.write_bytes(seal(b"k" * 32, sample_id, {"setting": {}}, code))
    else:  # the authentic header and signature over code of someone else's
        head, _, _ = path.read_bytes().rpartition(b"\n")
        path.write_bytes(head + b"\n" + code)
    spec = tmp_path / "plan.toml"
    spec.write_text(PLAN_SPEC)
    for option in ("--plan", "--dry-run"):
        with pytest.warns(ResultsWarning) as seen:
            assert main([str(spec), "--results", str(tmp_path), option]) == 0
        assert not marker.exists(), f"{option} ran the planted code"
        (line,) = [str(w.message) for w in seen if "refused" in str(w.message)]
        assert line.startswith(f"checkpoint {path} refused (") and "\n" not in line
        assert line.endswith("; its setting runs from the start")
    with pytest.warns(ResultsWarning, match="refused"):
        plan = plan_sweep(parse_spec(PLAN_SPEC, "plan.toml"), tmp_path, resume=True)
    assert plan.stale_checkpoints == [sample_id]  # removed on --resume, its setting run afresh
    assert [(g.sample_id, g.samples, g.offset) for g in plan.groups] == [(None, 3, 0)]
    assert not marker.exists(), "the planted code ran"


def test_a_checkpoint_is_refused_without_this_users_key(tmp_path, monkeypatch):
    from sweep.results import ResultsWarning
    from sweep.spec import parse_spec
    from sweep.tuning import plan_sweep

    _checkpointed(tmp_path, "bbt-digits-4shot-001")  # made with this user's key
    monkeypatch.setenv("PROMPTSWEEP_CHECKPOINT_KEY", str(tmp_path / "no-key-here"))
    with pytest.warns(ResultsWarning, match="there is no checkpoint key here"):
        plan = plan_sweep(parse_spec(PLAN_SPEC, "plan.toml"), tmp_path, resume=True)
    assert plan.stale_checkpoints == ["bbt-digits-4shot-001"]
    assert not (tmp_path / "no-key-here").exists()  # a plan makes no key


@pytest.mark.parametrize("method, other", [("bbt", 1), ("cbbt", -1)])
def test_resume_refuses_rows_of_another_version_of_a_method(tmp_path, method, other):
    from sweep.budget import CheckpointRecord, QueryCounts
    from sweep.errors import ConfigError
    from sweep.results import ResultsWriter, TrialRecord
    from sweep.spec import parse_spec
    from sweep.tuning import plan_sweep

    # bbt: rows of a later version; cbbt: of the one before (crop + flip views, not CBBT's)
    spec = parse_spec(PLAN_SPEC, "plan.toml")
    now = methods.REGISTRY.version(method)
    writer = ResultsWriter(tmp_path, "plan", {"lr": "float"})
    for version, sample in ((now, 0), (now + other, 1)):
        queries = QueryCounts(candidate_evals=40)
        sample_id = f"{method}-digits-4shot-00{sample}"
        writer.write(TrialRecord(
            trial_id=f"{sample_id}-s1", sweep="plan", sample_id=sample_id,
            method=method, method_version=version, model="m", dataset="digits", shots=4, seed=1,
            budget=40, budget_unit="candidate_evals", params={"lr": 0.5}, queries=queries,
            checkpoints=[CheckpointRecord(0, queries, 1.0, 0.5, 0.5, 1.0)]))
    with pytest.raises(ConfigError, match=f"{method} rows of version {now + other}.*would mix"):
        plan_sweep(spec, tmp_path, resume=True)


def test_resume_refuses_results_of_an_older_schema_which_the_report_still_reads(tmp_path):
    import pyarrow.parquet as pq

    from sweep.budget import CheckpointRecord, QueryCounts
    from sweep.errors import ConfigError
    from sweep.results import SCHEMA_VERSION, ResultsWriter, TrialRecord, load_results
    from sweep.spec import parse_spec
    from sweep.tuning import plan_sweep

    writer = ResultsWriter(tmp_path, "plan", {"sigma0": "float"})
    queries = QueryCounts(candidate_evals=40)
    writer.write(TrialRecord(
        trial_id="bbt-digits-4shot-000-s1", sweep="plan", sample_id="bbt-digits-4shot-000",
        method="bbt", method_version=methods.REGISTRY.version("bbt"), model="m",
        dataset="digits", shots=4, seed=1, budget=40, budget_unit="candidate_evals",
        params={"sigma0": 0.5}, queries=queries,
        checkpoints=[CheckpointRecord(0, queries, 1.0, 0.5, 0.5, 1.0, 0.7)]))
    # As schema 4 wrote it: no loss columns, its version in the metadata.
    for table in ("trials", "curves"):
        path = next((tmp_path / "plan" / table).glob("*.parquet"))
        data = pq.read_table(path)
        data = data.drop([c for c in data.column_names if "val_loss" in c])
        pq.write_table(data.replace_schema_metadata({**data.schema.metadata,
                                                     b"promptsweep.schema_version": b"4"}), path)
    with pytest.raises(ConfigError) as info:
        plan_sweep(parse_spec(PLAN_SPEC, "plan.toml"), tmp_path, resume=True)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(
        f"{tmp_path / 'plan'} was written with results schema 4 and this promptsweep writes "
        f"schema {SCHEMA_VERSION}: --resume cannot add to it")
    trials, curves = load_results(tmp_path / "plan")  # the report's reader
    assert trials["final_val_acc"].tolist() == [0.5] and "val_loss" not in curves
    from sweep.report import write_report

    assert "Sweep report: plan" in write_report(tmp_path / "plan").read_text()


def test_a_checkpoint_naming_a_class_that_was_renamed_is_stale(tmp_path, monkeypatch):
    import pickle
    import sys
    import types

    from sweep.tuning.trial import TrialState

    gone = types.ModuleType("renamed_since")
    exec("class OldName:\n    pass\n", gone.__dict__)
    monkeypatch.setitem(sys.modules, "renamed_since", gone)
    gone.OldName.__module__ = "renamed_since"
    blob = pickle.dumps(gone.OldName())
    del gone.OldName  # the class is not there under its name any more
    with pytest.warns(UserWarning, match="names a class that no longer exists.*starts over"):
        assert TrialState.loadable(blob, "cbbt-digits-16shot-000") is None
