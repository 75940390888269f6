"""Budgets as a swept dimension: ``[budget] limits`` runs a method planned from its budget
(CBBT's cosine) once per level, and reads the others' levels (BPT-VLM's) off one run."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from sweep.errors import ConfigError
from sweep.spec import parse_spec
from sweep.tuning import plan_sweep, run_sweep

SPEC = """
name = "limits"
[data]
datasets = ["digits"]
shots = [4]
seeds = [1]
[budget]
limits = [25, 50]
checkpoints = 8
[search]
methods = ["cbbt", "bpt-vlm"]
samples = 1
[resources]
concurrency = 2
# crop_flip views: with them the run planned for 25 and the full run's curve end level 25 at
# different test accuracies (below), which tells the frontier's reading of the two apart
[methods.cbbt]
params = { q = 4, views = "crop_flip" }
[methods.bpt-vlm]
params = { popsize = 10, intrinsic_dim_text = 20, intrinsic_dim_visual = 20 }
"""


def _spec(tmp_path, text=SPEC):
    return parse_spec(text, "limits.toml", base_dir=tmp_path)


def test_limits_are_levels_and_only_budget_planned_methods_run_once_per_level(tmp_path):
    spec = _spec(tmp_path)
    assert (spec.budget.limit, spec.budget.levels) == (50, (25, 50))
    plan = plan_sweep(spec, tmp_path / "results")
    runs = {g.method: (g.per_budget, g.runs) for g in plan.groups}
    assert runs == {"cbbt": (True, 2), "bpt-vlm": (False, 1)}
    assert plan.trials == 3 and "a run per level" in plan.describe()
    published = parse_spec('name = "p"\n[data]\ndatasets = ["digits"]\n[budget]\n'
                           'limit = "published"\nlimits = [0.25, 1.0]\n[search]\n'
                           'methods = ["cbbt"]\n', "p.toml")
    assert published.budget_for("cbbt", "digits", 16).levels == (48_188, 192_750)


@pytest.mark.parametrize("budget, match", [
    ("limits = [120, 60]", "increasing"), ("limits = [0.5, 1]", "query counts"),
    ("limit = 100\nlimits = [25, 50]", "largest of the limits"),
    ('limit = "published"\nlimits = [0.5, 2]', "fractions"),
    ('limit = "published"\nfraction = 0.5\nlimits = [0.5, 1]', "remove fraction"),
])
def test_bad_limits_are_refused(budget, match):
    with pytest.raises(ConfigError, match=match):
        parse_spec(f'name = "t"\n[budget]\n{budget}\n[search]\nmethods = ["cbbt"]\n', "t.toml")


@pytest.mark.ray
@pytest.mark.slow
def test_a_limits_sweep_runs_cbbt_per_level_and_reads_bpt_vlm_off_one_curve(ray_session,
                                                                          tmp_path):
    path = run_sweep(_spec(tmp_path), results_root=tmp_path / "results", progress=False)
    trials = pd.read_parquet(path / "trials")
    curves = pd.read_parquet(path / "curves")
    cbbt = trials[trials["method"] == "cbbt"].set_index("trial_id")
    assert sorted(cbbt.index) == ["cbbt-digits-4shot-000-s1", "cbbt-digits-4shot-000-s1-b25"]
    assert set(cbbt["budget_run"]) == {"per-budget"} and sorted(cbbt["budget"]) == [25, 50]
    assert cbbt.loc["cbbt-digits-4shot-000-s1-b25", "queries_candidate_evals"] == 25
    assert cbbt.loc["cbbt-digits-4shot-000-s1", "queries_candidate_evals"] == 50
    # The 25-query run was planned for 25 (its cosine ends there): not the 50-query run's
    # first half (from its third step on, the two cosines differ).
    full = curves[curves["trial_id"] == "cbbt-digits-4shot-000-s1"]
    at_25 = full[full["queries_candidate_evals"] == 25]["train_loss"]
    short = curves[curves["trial_id"] == "cbbt-digits-4shot-000-s1-b25"]["train_loss"]
    assert len(at_25) == 1 and float(short.iloc[-1]) != float(at_25.iloc[0])
    bpt = trials[trials["method"] == "bpt-vlm"]
    assert len(bpt) == 1 and bpt["budget_run"].iloc[0] == "curve"
    assert json.loads(bpt["config_json"].iloc[0])["levels"] == [25, 50]
    bpt_curve = curves[curves["trial_id"] == bpt["trial_id"].iloc[0]]
    assert 20 in set(bpt_curve["queries_candidate_evals"])  # the last generation within 25
    # The study knows the setting by its full-budget run, as the trial reported it, and so
    # does a study rebuilt from the tables (as --resume rebuilds it).
    import optuna

    from sweep.results import study_storage
    from sweep.tuning.studies import record_settings

    full_val = cbbt.loc["cbbt-digits-4shot-000-s1", "final_val_acc"]
    stored = optuna.load_study(study_name="cbbt-digits-4shot", storage=study_storage(path))
    assert [t.value for t in stored.trials] == pytest.approx([full_val])
    memory = optuna.storages.InMemoryStorage()
    assert record_settings(memory, _spec(tmp_path), trials, curves) == 2
    rebuilt = optuna.load_study(study_name="cbbt-digits-4shot", storage=memory)
    assert [t.value for t in rebuilt.trials] == pytest.approx([full_val])
    # The report's frontier reads CBBT's level 25 from the run planned for 25, and
    # BPT-VLM's off its one curve there.
    from sweep.report import write_report

    write_report(path)
    frontier = pd.read_csv(path / "report" / "frontier.csv")
    frontier = frontier[frontier["panel"] == "digits"].set_index(["method", "budget"])
    short = cbbt.loc["cbbt-digits-4shot-000-s1-b25"]
    assert frontier.loc[("cbbt", 25), "test_mean"] == pytest.approx(short["final_test_acc"])
    assert short["final_test_acc"] != full[full["queries_candidate_evals"] == 25]["test_acc"].iloc[0]
    assert frontier.loc[("cbbt", 50), "test_mean"] == pytest.approx(
        cbbt.loc["cbbt-digits-4shot-000-s1", "final_test_acc"])
    at_level = bpt_curve[bpt_curve["queries_candidate_evals"] == 20]["test_acc"].iloc[0]
    assert frontier.loc[("bpt-vlm", 25), "test_mean"] == pytest.approx(at_level)


def test_a_method_can_run_at_shot_counts_of_its_own(tmp_path):
    spec = parse_spec('name = "s"\n[data]\nshots = [16]\n[budget]\nlimit = 40\n[search]\n'
                      'methods = ["bbt", "cbbt"]\n[methods.cbbt]\nshots = [1, 4, 16]\n', "s.toml")
    assert spec.shots_for("bbt") == (16,) and spec.all_shots == (1, 4, 16)
    groups = {(g.method, g.shots) for g in plan_sweep(spec, tmp_path / "r").groups}
    assert groups == {("bbt", 16), ("cbbt", 1), ("cbbt", 4), ("cbbt", 16)}
    with pytest.raises(ConfigError, match="methods.cbbt.shots"):
        parse_spec('name = "s"\n[budget]\nlimit = 9\n[search]\nmethods = ["cbbt"]\n'
                   '[methods.cbbt]\nshots = [3]\n', "s.toml")
