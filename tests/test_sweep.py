"""The whole sweep on a local Ray: Parquet tables, refusal to overwrite, resume, determinism (also
across one and two oracle actors), ASHA."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from sweep.errors import ConfigError
from sweep.spec import parse_spec
from sweep.tuning import run_sweep

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SPEC = """
name = "{name}"
[data]
datasets = ["digits"]
shots = [4]
seeds = [1, 2]
[budget]
unit = "candidate_evals"
limit = 160
checkpoints = 8
[search]
methods = ["bbt", "zero-shot"]
samples = 2
[resources]
concurrency = 2
actors = {actors}
[methods.bbt]
params = {{ popsize = 10, intrinsic_dim_text = 50 }}
"""

VOLATILE = ["wall_s", "started_at", "git_rev"]


def _run(tmp_path, name, actors=1, **kwargs):
    spec = parse_spec(SPEC.format(name=name, actors=actors), "test.toml", base_dir=tmp_path)
    return run_sweep(spec, results_root=tmp_path / "results", progress=False, **kwargs), spec


FIRST_RUN: dict[str, list[str]] = {}


@pytest.fixture(scope="module")
def sweep_dir(ray_session, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    path, spec = _run(tmp, "a")
    # Tune's trial folders as the first run left them, before any resume adds its own
    FIRST_RUN["tune_trials"] = sorted(p.name for p in (path / ".tune" / spec.name).iterdir()
                                      if p.name.startswith("tune_trainable_"))
    return tmp, path


def test_tables_load_with_pandas_and_respect_the_budget(sweep_dir):
    _, path = sweep_dir
    trials = pd.read_parquet(path / "trials")
    curves = pd.read_parquet(path / "curves")
    assert sorted(trials["method"].unique()) == ["bbt", "zero-shot"]
    assert sorted(trials["seed"].unique()) == [1, 2] and (trials["status"] == "completed").all()
    bbt = trials[trials["method"] == "bbt"]
    assert len(bbt) == 4 and (bbt["queries_candidate_evals"] <= 160).all()
    assert bbt["sample_id"].nunique() == 2
    per_trial = curves[curves["method"] == "bbt"].groupby("trial_id")["checkpoint"].count()
    assert (per_trial == 8).all()
    assert (curves["queries_candidate_evals"] <= 160).all()
    assert bbt["final_test_acc"].notna().all() and "param_sigma0" in trials.columns
    zs = trials[trials["method"] == "zero-shot"]
    assert (zs["queries_candidate_evals"] == 0).all()


def test_each_sampling_group_has_a_study_with_one_trial_per_setting(sweep_dir):
    # The stored study (results/<sweep>/optuna.db) as optuna-dashboard and the report read it.
    import optuna

    from sweep.results import study_storage

    _, path = sweep_dir
    url = study_storage(path)
    assert optuna.get_all_study_names(url) == ["bbt-digits-4shot"]  # zero-shot samples nothing
    study = optuna.load_study(study_name="bbt-digits-4shot", storage=url)
    bbt = pd.read_parquet(path / "trials").query("method == 'bbt'")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    by_id = {t.user_attrs["sample_id"]: t for t in study.trials}
    # Its value is what the trial reported: the mean over seeds of the last validation accuracy.
    assert {k: t.value for k, t in by_id.items()} == pytest.approx(
        bbt.groupby("sample_id")["final_val_acc"].mean().to_dict())
    curves = pd.read_parquet(path / "curves").merge(bbt[["trial_id", "sample_id"]])
    for sample_id, rows in bbt.groupby("sample_id"):
        trial = by_id[sample_id]
        assert trial.params == {"sigma0": rows["param_sigma0"].iloc[0]}
        assert (trial.user_attrs["method"], trial.user_attrs["shots"]) == ("bbt", 4)
        own = curves[curves["sample_id"] == sample_id]
        means = own.groupby("queries_candidate_evals")["val_acc"].mean()
        assert trial.intermediate_values == pytest.approx(means.to_dict())  # step: queries


def test_groups_are_in_flight_together(sweep_dir):
    # One Tune run for all groups: Tune numbers the trials of a run 1, 2, 3, ..., so the bbt
    # group's two settings and the zero-shot group's one share one numbering; run group by
    # group, each group's run would start again at 1. (Whether the zero-shot trial overlaps a
    # bbt trial in time depends on the order of their ends, so is not asserted; which group
    # goes next is tests/test_groups.py's.)
    found = [re.match(r"tune_trainable_[0-9a-f]+_(\d+)_group=(\d+),", name).groups()
             for name in FIRST_RUN["tune_trials"]]
    assert sorted(int(number) for number, _ in found) == [1, 2, 3]
    assert sorted(int(group) for _, group in found) == [0, 0, 1]


def test_a_second_run_refuses_to_overwrite_and_resume_has_nothing_left(sweep_dir):
    tmp, path = sweep_dir
    before = pd.read_parquet(path / "trials")
    with pytest.raises(ConfigError, match="--resume"):
        _run(tmp, "a")
    _run(tmp, "a", resume=True)
    after = pd.read_parquet(path / "trials")
    pd.testing.assert_frame_equal(before.drop(columns=VOLATILE), after.drop(columns=VOLATILE))


def test_resume_reruns_a_truncated_trial(sweep_dir):
    tmp, path = sweep_dir
    part = sorted((path / "trials").glob("part-bbt*"))[0]
    part.write_bytes(part.read_bytes()[:100])  # a crash in the middle of a write
    _run(tmp, "a", resume=True)
    trials = pd.read_parquet(path / "trials")
    assert len(trials) == 6 and trials["trial_id"].is_unique
    # The setting that lost a seed left its study at the resume and joined it again once rerun.
    import optuna

    from sweep.results import study_storage

    study = optuna.load_study(study_name="bbt-digits-4shot", storage=study_storage(path))
    values = dict(sorted((t.user_attrs["sample_id"], t.value) for t in study.trials))
    expected = trials.query("method == 'bbt'").groupby("sample_id")["final_val_acc"].mean()
    assert list(values) == list(expected.index) and list(values.values()) == pytest.approx(
        expected.tolist())


def test_a_resume_with_more_settings_tells_tpe_of_the_earlier_ones(sweep_dir, tmp_path,
                                                                  monkeypatch):
    # A copy of the first sweep as a folder from before the studies (no optuna.db), resumed
    # with a third setting to draw: its study is seeded from the tables, and the sampler draws
    # the new setting from a study that holds the two earlier ones.
    import shutil

    import optuna

    from sweep.results import STUDY_FILE, study_storage

    _, first = sweep_dir
    copy = tmp_path / "results" / "a"
    shutil.copytree(first, copy, ignore=shutil.ignore_patterns(".tune", f"{STUDY_FILE}*"))
    complete = optuna.trial.TrialState.COMPLETE
    told, real = [], optuna.samplers.TPESampler.before_trial

    def before_trial(self, study, trial):  # what the sampler knows as each setting is drawn
        told.append(sorted((t.user_attrs["sample_id"], t.value)
                           for t in study.get_trials(deepcopy=False, states=(complete,))))
        return real(self, study, trial)

    monkeypatch.setattr(optuna.samplers.TPESampler, "before_trial", before_trial)
    text = SPEC.format(name="a", actors=1).replace("samples = 2", "samples = 3")
    run_sweep(parse_spec(text, "test.toml", base_dir=tmp_path), results_root=tmp_path / "results",
              progress=False, resume=True)
    bbt = pd.read_parquet(first / "trials").query("method == 'bbt'")
    earlier = sorted(bbt.groupby("sample_id")["final_val_acc"].mean().items())
    assert [[k for k, _ in seen] for seen in told] == [[k for k, _ in earlier]]
    assert [v for _, v in told[0]] == pytest.approx([v for _, v in earlier])
    study = optuna.load_study(study_name="bbt-digits-4shot", storage=study_storage(copy))
    assert [(t.user_attrs["sample_id"], t.state) for t in study.trials] == [
        (f"bbt-digits-4shot-00{i}", complete) for i in range(3)]
    new = pd.read_parquet(copy / "trials").query("sample_id == 'bbt-digits-4shot-002'")
    assert len(new) == 2 and study.trials[2].value == pytest.approx(new["final_val_acc"].mean())


def test_the_same_spec_gives_the_same_tables_with_one_and_two_actors(sweep_dir):
    # The first sweep had one oracle actor; with two, every batch is split between them.
    # (Equal tables from a second run on two actors also show that a run repeats: a rerun
    # on one actor, once a test of its own, would add nothing but 25 s.)
    tmp, first = sweep_dir
    second, _ = _run(tmp, "b2", 2)
    for table in ("trials", "curves"):
        a = pd.read_parquet(first / table).drop(columns=VOLATILE, errors="ignore")
        b = pd.read_parquet(second / table).drop(columns=VOLATILE, errors="ignore")
        for frame in (a, b):
            frame["sweep"] = "x"
        pd.testing.assert_frame_equal(a, b)


def test_merging_changes_the_tables_by_float_rounding_at_most(sweep_dir):
    # With merging on, which requests share a forward depends on timing; on this CPU in fp32
    # a merged answer is within 1e-6 of a separate one (test_merging.py), and so are the
    # tables, as long as no comparison a method makes falls within that (README: Precision).
    import json

    tmp, first = sweep_dir
    text = SPEC.format(name="merged", actors=1).replace("[resources]", "[resources]\nmerge_wait_ms = 20")
    second = run_sweep(parse_spec(text, "test.toml", base_dir=tmp), results_root=tmp / "results",
                       progress=False)
    actor = json.loads((second / "actors.json").read_text())["actors"][0]
    assert actor["requests_per_forward_max"] >= 2, actor  # requests did merge
    a, b = (pd.read_parquet(folder / "curves").sort_values(["trial_id", "checkpoint"])
            for folder in (first, second))
    assert a["trial_id"].tolist() == b["trial_id"].tolist()
    assert a["queries_candidate_evals"].tolist() == b["queries_candidate_evals"].tolist()
    for column in ("train_loss", "val_acc", "test_acc"):
        np.testing.assert_allclose(b[column], a[column], atol=1e-6, err_msg=column)


def test_asha_stops_poor_settings_on_the_query_axis(ray_session, tmp_path):
    text = (SPEC.format(name="asha", actors=1)
            .replace('methods = ["bbt", "zero-shot"]', 'methods = ["bbt"]')
            .replace("samples = 2", 'samples = 3\nscheduler = "asha"'))
    spec = parse_spec(text, "test.toml", base_dir=tmp_path)
    path = run_sweep(spec, results_root=tmp_path / "results", progress=False)
    trials = pd.read_parquet(path / "trials")
    bbt = trials[trials["method"] == "bbt"]
    assert len(bbt) == 6 and set(bbt["status"]) <= {"completed", "stopped"}
    assert (bbt["status"] == "completed").any()  # the best setting runs to the budget
    assert (bbt["queries_candidate_evals"] <= 160).all()
    assert (bbt["wall_s"] > 0).all()  # a stopped trial's time too: until the driver heard of it
    curves = pd.read_parquet(path / "curves")
    counts = curves[curves["method"] == "bbt"].groupby("trial_id")["checkpoint"].count()
    stopped = bbt.loc[bbt["status"] == "stopped", "trial_id"]
    assert (counts[stopped] < 8).all() and (counts.drop(stopped) == 8).all()
    # In the group's study a stopped setting is PRUNED, its value its last report's.
    import optuna

    from sweep.results import study_storage

    study = optuna.load_study(study_name="bbt-digits-4shot", storage=study_storage(path))
    pruned = optuna.trial.TrialState.PRUNED
    states = {t.user_attrs["sample_id"]: t.state for t in study.trials}
    stopped_settings = bbt.groupby("sample_id")["status"].agg(lambda s: "stopped" in set(s))
    assert states == {s: pruned if was else optuna.trial.TrialState.COMPLETE
                      for s, was in stopped_settings.items()}
    for trial in study.trials:
        assert trial.value == trial.intermediate_values[max(trial.intermediate_values)]
        assert trial.value == pytest.approx(
            bbt.loc[bbt["sample_id"] == trial.user_attrs["sample_id"], "final_val_acc"].mean())
