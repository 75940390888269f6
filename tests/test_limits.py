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
limits = [30, 60]
checkpoints = 8
[search]
methods = ["cbbt", "bpt-vlm"]
samples = 1
[resources]
concurrency = 2
[methods.cbbt]
params = { q = 9 }
[methods.bpt-vlm]
params = { popsize = 10, intrinsic_dim_text = 20, intrinsic_dim_visual = 20 }
"""


def _spec(tmp_path, text=SPEC):
    return parse_spec(text, "limits.toml", base_dir=tmp_path)


def test_limits_are_levels_and_only_budget_planned_methods_run_once_per_level(tmp_path):
    spec = _spec(tmp_path)
    assert (spec.budget.limit, spec.budget.levels) == (60, (30, 60))
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
    ("limit = 100\nlimits = [30, 60]", "largest of the limits"),
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
    assert sorted(cbbt.index) == ["cbbt-digits-4shot-000-s1", "cbbt-digits-4shot-000-s1-b30"]
    assert set(cbbt["budget_run"]) == {"per-budget"} and sorted(cbbt["budget"]) == [30, 60]
    assert cbbt.loc["cbbt-digits-4shot-000-s1-b30", "queries_candidate_evals"] == 30
    assert cbbt.loc["cbbt-digits-4shot-000-s1", "queries_candidate_evals"] == 60
    # The 30-query run was planned for 30 (its cosine ends there): not the 60-query run's
    # first half.
    full = curves[curves["trial_id"] == "cbbt-digits-4shot-000-s1"]
    at_30 = full[full["queries_candidate_evals"] == 30]["train_loss"]
    short = curves[curves["trial_id"] == "cbbt-digits-4shot-000-s1-b30"]["train_loss"]
    assert len(at_30) == 1 and float(short.iloc[-1]) != float(at_30.iloc[0])
    bpt = trials[trials["method"] == "bpt-vlm"]
    assert len(bpt) == 1 and bpt["budget_run"].iloc[0] == "curve"
    assert json.loads(bpt["config_json"].iloc[0])["levels"] == [30, 60]
    bpt_curve = curves[curves["trial_id"] == bpt["trial_id"].iloc[0]]
    assert 30 in set(bpt_curve["queries_candidate_evals"])  # a checkpoint at each level
