"""Published budgets: each method's, per data set and shot count, pinned against FIDELITY.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweep.errors import ConfigError
from sweep.spec import parse_spec
from sweep.spec.published import published_budget

SPEC = """
name = "p"
{budget}
[data]
datasets = ["digits"]
shots = [16]
[search]
methods = {methods}
"""


def _limit(method, dataset, shots=16):
    return published_budget(method, dataset, shots).limit


def test_cbbt_budget_is_150_epochs_of_floor_train_over_32_steps_of_257_losses():
    # FIDELITY.md (CBBT): 101 classes x 16 = 1,616 images -> 50 steps; 37 -> 592 -> 18; 10 -> 5.
    assert _limit("cbbt", "Food101") == 1_927_500
    assert _limit("cbbt", "OxfordPets") == 693_900
    assert _limit("cbbt", "EuroSAT") == _limit("cbbt", "digits") == 192_750
    assert _limit("cbbt", "digits", shots=1) == 150 * 1 * 257  # 10 images: one short batch
    assert _limit("cbbt", "StanfordCars") == 80 * (196 * 16 // 32) * 257  # Cars: 80 epochs
    assert published_budget("cbbt-tip", "Food101", 16).unit == "candidate_evals"


def test_bpt_vlm_budget_is_its_configs_per_data_set_and_the_median_elsewhere():
    published = {"Caltech101": 3600, "OxfordPets": 3600, "Food101": 3600, "ImageNet": 14_400,
                 "SUN397": 18_000, "StanfordCars": 25_200, "EuroSAT": 25_200, "UCF101": 25_200,
                 "DTD": 36_000}
    for dataset, limit in published.items():
        for method in ("bpt-vlm", "bpt-vlm-deep", "bpt-vlm-mmes"):
            assert _limit(method, dataset) == limit
    assert _limit("bpt-vlm", "Flowers102") == _limit("bpt-vlm", "digits", shots=4) == 18_000


def test_bbt_zip_and_blackvip_budgets_hold_on_every_data_set():
    assert _limit("bbt", "DTD") == 8000
    for method in ("zip", "blackvip-tokens"):
        budget = published_budget(method, "ImageNet", 4)
        assert (budget.unit, budget.limit, budget.batch_size) == ("calls", 5000, 128)
    with pytest.raises(ConfigError, match="no published budget"):
        published_budget("zo", "digits", 16)


def test_craft_and_sharpzo_budgets_go_by_shots_with_imagenet_at_4000_above_one_shot():
    # main_craft.py, main_craft_imagenet.py, main_sharpzo.py: candidate evaluations.
    for method in ("craft", "sharpzo"):
        assert [_limit(method, "DTD", k) for k in (1, 2, 4, 8, 16)] == [2000, 4000, 4000,
                                                                         8000, 8000]
        assert [_limit(method, "ImageNet", k) for k in (1, 2, 4, 8, 16)] == [2000] + [4000] * 4
        assert published_budget(method, "digits", 16).unit == "candidate_evals"


def test_a_folder_data_set_counts_its_classes_from_its_root(tmp_path):
    for name in ("a", "b", "c"):
        (tmp_path / "train" / name).mkdir(parents=True)
    assert published_budget("cbbt", "folder", 16, data_root=tmp_path).limit == 150 * 1 * 257
    with pytest.raises(ConfigError, match="needs its data root"):
        published_budget("cbbt", "folder", 16)


def test_a_specification_resolves_published_budgets_and_fractions_per_group():
    spec = parse_spec(SPEC.format(budget='[budget]\nlimit = "published"\nfraction = 0.5',
                                  methods='["cbbt", "zip", "zero-shot"]'), "p.toml")
    assert spec.budget_for("cbbt", "Food101", 16).limit == 963_750
    zip_ = spec.budget_for("zip", "digits", 16)
    assert (zip_.unit, zip_.limit, zip_.label) == ("calls", 2500, "2,500 calls (published x 0.5)")
    methods = '["cbbt", "coop"]\n[methods.cbbt]\nbudget = "published"'
    mixed = parse_spec(SPEC.format(budget="[budget]\nlimit = 100", methods=methods), "p.toml")
    assert mixed.budget_for("cbbt", "digits", 16).limit == 192_750
    assert mixed.budget_for("coop", "digits", 16).limit == 100


@pytest.mark.parametrize("budget, methods, match", [
    ('budget = "published"', '["bbt", "coop"]', "coop has no published budget"),
    ('[budget]\nlimit = "published"\nunit = "calls"', '["bbt"]', "its method's own unit"),
    ("[budget]\nlimit = 10\nfraction = 0.5", '["bbt"]', "a fraction is of a published budget"),
    ('[budget]\nlimit = "published"\nfraction = 1.5', '["bbt"]', "fraction"),
])
def test_published_budgets_refuse_what_they_cannot_mean(budget, methods, match):
    with pytest.raises(ConfigError, match=match):
        parse_spec(SPEC.format(budget=budget, methods=methods), "p.toml")


def test_coop16_plans_each_group_at_its_published_budget():
    from sweep.tuning import plan_sweep

    root = Path(__file__).resolve().parent.parent
    spec = parse_spec((root / "sweeps" / "coop16.toml").read_text(), "coop16.toml",
                      check_paths=False)
    text = plan_sweep(spec, "/nonexistent-results").describe()
    assert "cbbt-Food101-16shot: 20 settings x 3 seeds, budget 1,927,500 candidate_evals " \
           "(published)" in text
    assert "cbbt-OxfordPets-16shot: 20 settings x 3 seeds, budget 693,900" in text
    assert "zip-Caltech101-16shot: 20 settings x 3 seeds, budget 5,000 calls (published)" in text
