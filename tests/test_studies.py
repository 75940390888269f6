"""The groups' Optuna studies in results/<sweep>/optuna.db, without Ray running: how a trial ends
there (ASHA's stopped trials PRUNED), and a resumed sweep's studies rebuilt from its tables.

A whole sweep's study, and a resume that tells TPE of the earlier settings, are
tests/test_sweep.py's.
"""

from __future__ import annotations

import pickle

import optuna
import pytest
from optuna.trial import TrialState

import methods

from sweep.results import study_storage
from sweep.spec import parse_spec
from sweep.tuning import GroupedSearcher, SettingSource

TAG = "bbt-digits-4shot"
SPEC = """
name = "st"
[data]
shots = [4]
seeds = [1, 2]
[budget]
limit = 40
[search]
methods = ["bbt"]
samples = 4
[methods.bbt]
params = { popsize = 10, intrinsic_dim_text = 50 }
"""


def _result(val_acc: float, queries: int, status: str) -> dict:
    """A trial's report as tune_trainable makes it (one seed, the fields the study reads)."""
    return {"val_acc": val_acc, "queries": queries,
            "outcomes": [{"status": status, "checkpoints": [{"checkpoint": 0}]}]}


def test_a_trial_ends_in_its_study_as_its_rows_will_say(tmp_path):
    from sweep.tuning.studies import GroupSearch, open_storage

    spec = parse_spec(SPEC, "st.toml")
    search = GroupSearch(spec.method("bbt").space, optuna.samplers.TPESampler(seed=0),
                         open_storage(tmp_path), TAG, {"method": "bbt", "shots": 4})
    grouped = GroupedSearcher([SettingSource(3, 5, search)], "val_acc", "max")
    for trial_id in "abc":
        grouped.suggest(trial_id)
    grouped.on_trial_result("a", _result(0.3, 10, "running"))
    # ASHA stops "a" on its second report: Tune passes that report to on_trial_complete only.
    grouped.on_trial_complete("a", _result(0.4, 20, "running"))
    grouped.on_trial_result("b", _result(0.5, 10, "running"))
    # The searcher as Tune checkpoints it (pickled with its storage), then goes on.
    grouped = pickle.loads(pickle.dumps(grouped))
    grouped.on_trial_complete("b", _result(0.6, 40, "ok"))
    grouped.on_trial_result("c", _result(0.1, 10, "running"))
    grouped.on_trial_complete("c", None, error=True)  # the trial raised

    study = optuna.load_study(study_name=TAG, storage=study_storage(tmp_path))
    assert [t.state for t in study.trials] == [TrialState.PRUNED, TrialState.COMPLETE,
                                               TrialState.FAIL]
    assert [t.value for t in study.trials] == [0.4, 0.6, None]  # pruned: its last value
    assert [t.intermediate_values for t in study.trials] == [{10: 0.3, 20: 0.4}, {10: 0.5, 40: 0.6},
                                                             {10: 0.1}]  # step: queries used
    assert [t.user_attrs for t in study.trials] == [
        {"sample_id": f"{TAG}-00{i}", "method": "bbt", "shots": 4} for i in (5, 6, 7)]
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert set(study.trials[0].params) == {"sigma0"}


def _search(tmp_path):
    from sweep.tuning.studies import GroupSearch, open_storage

    spec = parse_spec(SPEC, "st.toml")
    return GroupSearch(spec.method("bbt").space, optuna.samplers.TPESampler(seed=0),
                       open_storage(tmp_path), TAG, {})


def test_a_tune_without_the_private_attributes_the_studies_use_fails_naming_its_version(
        tmp_path, monkeypatch):
    import ray
    from ray.tune.search.optuna import OptunaSearch

    from sweep.errors import RayVersionError

    built = OptunaSearch.__init__

    def moved(self, *args, **kwargs):  # a Tune that keeps its Optuna trials elsewhere
        built(self, *args, **kwargs)
        self._trials_by_id = self.__dict__.pop("_ot_trials")

    monkeypatch.setattr(OptunaSearch, "__init__", moved)
    with pytest.raises(RayVersionError) as info:
        _search(tmp_path)
    assert str(info.value).startswith(
        f"ray.tune.search.optuna.OptunaSearch._ot_trials (a dict, which sweep.tuning.studies "
        f"uses) is not in Ray {ray.__version__}")
    assert "\n" not in str(info.value)


def test_a_study_write_that_fails_in_the_code_is_raised_not_warned(tmp_path):
    search = _search(tmp_path)
    grouped = GroupedSearcher([SettingSource(1, 0, search)], "val_acc", "max")
    grouped.suggest("a")
    search._ot_trials["a"] = object()  # what a Tune whose trials moved would hand back
    with pytest.raises(AttributeError):
        grouped.on_trial_result("a", _result(0.3, 10, "running"))


def _rows(tmp_path, spec) -> None:
    """A folder as an interrupted sweep leaves it: 000 done, 001 stopped by ASHA, 002 lost its
    seed 2 (a part truncated and removed), on two seeds with two checkpoints each."""
    from sweep.budget import CheckpointRecord, QueryCounts
    from sweep.results import ResultsWriter, TrialRecord

    from sweep.spec import param_columns

    writer = ResultsWriter(tmp_path, "st", param_columns([spec.method("bbt").space]))
    settings = {0: ("completed", 0.5), 1: ("stopped", 0.9), 2: ("completed", 1.5)}
    for sample, (status, sigma0) in settings.items():
        params = {"sigma0": sigma0, "popsize": 10, "intrinsic_dim_text": 50}
        for seed in (1, 2) if sample != 2 else (1,):
            sample_id = f"{TAG}-00{sample}"
            checkpoints = [CheckpointRecord(k, QueryCounts(candidate_evals=20 * (k + 1)), 1.0,
                                            0.1 * (k + 1) + 0.01 * seed + 0.1 * sample, 0.5, 1.0)
                           for k in range(2)]
            writer.write(TrialRecord(
                trial_id=f"{sample_id}-s{seed}", sweep="st", sample_id=sample_id, method="bbt",
                method_version=methods.REGISTRY.version("bbt"), model="m", dataset="digits",
                shots=4, seed=seed, budget=40,
                budget_unit="candidate_evals", status=status, queries=checkpoints[-1].queries,
                params=params, config={"params": params}, checkpoints=checkpoints))


def test_a_resume_rebuilds_each_study_from_the_tables(tmp_path):
    from sweep.tuning import plan_sweep
    from sweep.tuning.studies import open_storage, prepare_studies

    spec = parse_spec(SPEC, "st.toml")
    _rows(tmp_path, spec)
    # What the previous driver left: a trial cut short (RUNNING) and a setting whose parts
    # are gone since (COMPLETE): neither may count for the sampler.
    old = optuna.create_study(storage=open_storage(tmp_path / "st"), study_name=TAG,
                              direction="maximize")
    old.ask().suggest_float("sigma0", 0.1, 2.0, log=True)
    old.add_trial(optuna.trial.create_trial(
        params={"sigma0": 1.0}, distributions={"sigma0": optuna.distributions.FloatDistribution(
            0.1, 2.0, log=True)}, value=0.99, user_attrs={"sample_id": f"{TAG}-003"}))

    plan = plan_sweep(spec, tmp_path, resume=True)
    prepare_studies(plan, resume=True)

    study = optuna.load_study(study_name=TAG, storage=study_storage(tmp_path / "st"))
    assert [t.user_attrs["sample_id"] for t in study.trials] == [f"{TAG}-000", f"{TAG}-001"]
    done, stopped = study.trials
    # The value the trial reported: the mean over seeds of the last checkpoint's val_acc.
    assert done.state == TrialState.COMPLETE and done.value == pytest.approx((0.21 + 0.22) / 2)
    assert done.intermediate_values == pytest.approx({20: 0.115, 40: 0.215})
    assert done.params == {"sigma0": 0.5}
    assert done.distributions == {"sigma0": optuna.distributions.FloatDistribution(0.1, 2.0,
                                                                                   log=True)}
    assert done.user_attrs == {"sample_id": f"{TAG}-000", "method": "bbt", "dataset": "digits",
                               "shots": 4, "seeds": [1, 2]}
    assert stopped.state == TrialState.PRUNED and stopped.value == pytest.approx(0.315)
    # 002 lost a seed: its repair reruns it, and it joins its study when that ends.
    assert [(g.sample_id, g.seeds) for g in plan.groups if g.sample_id] == [(f"{TAG}-002", (2,))]
