"""The specifications in sweeps/reproduce/: they load, plan, resolve their budgets, and name
published targets for methods and data sets they run."""

from __future__ import annotations

from pathlib import Path

import pytest

import methods
from sweep.errors import ConfigError
from sweep.spec import load_spec, parse_spec
from sweep.tuning import plan_sweep

SPECS = sorted((Path(__file__).resolve().parent.parent / "sweeps" / "reproduce").glob("*.toml"))


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_a_reproduction_loads_plans_and_resolves_its_published_budgets(path, tmp_path):
    spec = load_spec(path, check_paths=False)
    plan = plan_sweep(spec, tmp_path)
    assert plan.trials > 0
    for group in plan.groups:
        assert group.budget.limit >= 1 and group.budget.published
        # The release's one setting: nothing left to sample, at the method's defaults unless
        # the specification says otherwise.
        assert group.space.samples_nothing, (group.tag, group.space.names)
        defaults = methods.REGISTRY.make_config(group.method)
        assert all(getattr(defaults, k) == v for k, v in group.space.fixed.items()), group.tag
    if spec.targets is None:  # a release without a table says so where the targets would be
        assert "No [targets]" in path.read_text()
        return
    assert spec.targets.accuracy
    for method, dataset in spec.targets.accuracy:
        assert method in spec.search.methods and dataset in spec.data.datasets


def test_bpt_vlms_reproduction_runs_its_published_budgets():
    spec = load_spec(SPECS[0].parent / "bpt-vlm.toml", check_paths=False)
    budgets = {(g.method, g.dataset): g.budget.limit for g in plan_sweep(spec, "/x").groups}
    assert budgets[("bpt-vlm", "DTD")] == 36_000 and budgets[("bpt-vlm-deep", "ImageNet")] == 14_400
    assert spec.targets.accuracy[("bpt-vlm", "Caltech101")] == 94.16


@pytest.mark.parametrize("targets, match", [
    ('[targets]\nsource = "x"\n[targets.zip]\ndigits = 50.0', "not among search.methods"),
    ('[targets]\nsource = "x"\n[targets.bbt]\nDTD = 50.0', "unknown key 'DTD'"),
    ('[targets]\nsource = "x"\nshots = 4\n[targets.bbt]\ndigits = 50.0', "not among data.shots"),
    ('[targets]\nsource = "x"\n[targets.bbt]\ndigits = 150.0', "targets.bbt.digits"),
])
def test_targets_name_what_the_sweep_runs(targets, match):
    text = f'name = "t"\n[budget]\nlimit = 10\n[search]\nmethods = ["bbt"]\n{targets}\n'
    with pytest.raises(ConfigError, match=match):
        parse_spec(text, "t.toml")
