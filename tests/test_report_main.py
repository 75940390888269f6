"""The report as the field reads it: main tables, the budget frontier, hyperparameter importance,
each figure's CSV, and per-budget runs (hand-made tables; no Ray, no model)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sweep.budget import CheckpointRecord, QueryCounts
from sweep.report import (
    best_curves,
    best_settings,
    budget_levels,
    frontier_table,
    main_table,
    param_importances,
    seed_band,
)
from sweep.report.__main__ import main
from sweep.results import ResultsWriter, TrialRecord, load_results

PARAMS = {"sigma0": "float", "popsize": "int", "lr": "float"}
T0 = datetime(2026, 1, 2, tzinfo=timezone.utc)
LEVELS = [125, 250, 500, 1000]
DATASETS = ("digits", "digits-inverted")
# Final test accuracy per seed (1, 2) of each method's one setting (bbt: its best of nine
# on digits), the same at every checkpoint. digits ranks cbbt 1, bbt 2, zo 3; on
# digits-inverted bbt (0.39, 0.41: mean 0.40) and cbbt (0.40) tie at 1.5; zo lacks it.
TEST = {("bbt", "digits"): (.60, .62), ("cbbt", "digits"): (.70, .70),
        ("zo", "digits"): (.50, .50), ("bbt", "digits-inverted"): (.39, .41),
        ("cbbt", "digits-inverted"): (.40, .40), ("coop", "digits"): (.90, .90),
        ("coop", "digits-inverted"): (.90, .90)}
ZERO_SHOT = {"digits": .30, "digits-inverted": .20}


def _cps(levels, vals, tests) -> list[CheckpointRecord]:
    return [CheckpointRecord(i, QueryCounts(candidate_evals=q, calls=q, images=16 * q,
                                            text_sequences=10 * q), 1.0, v, t, float(i))
            for i, (q, v, t) in enumerate(zip(levels, vals, tests))]


def _write(writer, method, sample, seed, dataset="digits", val=.5, test=.5, params=None,
           budget=1000, levels=LEVELS, vals=None, tests=None, status="completed") -> None:
    cps = _cps(levels, vals or [val] * len(levels), tests or [test] * len(levels))
    writer.write(TrialRecord(
        trial_id=f"{sample}-b{budget}-s{seed}", sweep=writer.sweep_dir.name, sample_id=sample,
        method=method, model="promptsweep-tiny", dataset=dataset, shots=16, seed=seed,
        budget_unit="candidate_evals", budget=budget, black_box=method != "coop",
        started_at=T0, params=params or {}, queries=cps[-1].queries, checkpoints=cps,
        status=status, config={"sample": sample, "seed": seed, "budget": budget}))


def write_suite(root: Path) -> Path:
    """Two data sets, zero-shot, bbt (nine settings on digits), cbbt, zo (digits only), coop."""
    writer = ResultsWriter(root, "suite", PARAMS)
    for (method, dataset), tests in TEST.items():
        for seed, test in zip((1, 2), tests):
            _write(writer, method, f"{method}-{dataset}", seed, dataset, val=.65, test=test,
                   params={"lr": 0.01} if method != "bbt" else {"sigma0": 2.0, "popsize": 35})
    # bbt's other eight settings on digits (one seed each): validation accuracy rises with
    # sigma0 alone (popsize shuffled), each below the best's 0.65.
    for k, popsize in enumerate([10, 50, 20, 40, 30, 15, 45, 25]):
        _write(writer, "bbt", f"bbt-digits-{k}", 1, val=.25 + .05 * k, test=.3,
               params={"sigma0": 0.1 * 20 ** (k / 8), "popsize": popsize})
    for dataset, acc in ZERO_SHOT.items():
        for seed in (1, 2):
            writer.write(TrialRecord(
                trial_id=f"zero-shot-{dataset}-s{seed}", sweep="suite",
                sample_id=f"zero-shot-{dataset}", method="zero-shot", model="promptsweep-tiny",
                dataset=dataset, shots=16, seed=seed, budget_unit="candidate_evals", budget=1,
                started_at=T0, checkpoints=[CheckpointRecord(0, QueryCounts(), np.nan, acc + .1,
                                                             acc, 0.0)]))
    return writer.sweep_dir


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    return write_suite(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def tables(suite):
    trials, curves = load_results(suite)
    return trials, curves, best_settings(trials, curves)


@pytest.fixture(scope="module")
def report(suite) -> Path:
    """``python -m sweep.report`` on the suite (in process), once."""
    out = suite.parent / "report"
    assert main([str(suite), "--out", str(out)]) == 0
    return out


def _cell(table, method, dataset, level=1.0):
    sel = table[(table["method"] == method) & (table["dataset"] == dataset)
                & np.isclose(table["level_fraction"], level)]
    assert len(sel) == 1, (method, dataset, sel)
    return sel.iloc[0]


def test_main_table_average_and_rank_on_a_hand_made_table(tables):
    trials, _, best = tables
    table = main_table(trials, best)
    assert _cell(table, "bbt", "digits")["test_mean"] == pytest.approx(.61)
    # Per data set, black-box methods only: ties share the average rank.
    assert _cell(table, "cbbt", "digits")["rank"] == 1
    assert _cell(table, "bbt", "digits")["rank"] == 2
    assert _cell(table, "zo", "digits")["rank"] == 3
    assert _cell(table, "bbt", "digits-inverted")["rank"] == 1.5
    assert _cell(table, "cbbt", "digits-inverted")["rank"] == 1.5
    # Averages over both data sets; none for zo, which lacks one.
    assert _cell(table, "bbt", "average")["test_mean"] == pytest.approx((.61 + .40) / 2)
    assert _cell(table, "cbbt", "average")["test_mean"] == pytest.approx(.55)
    assert _cell(table, "bbt", "average")["rank"] == pytest.approx(1.75)
    assert _cell(table, "cbbt", "average")["rank"] == pytest.approx(1.25)
    assert np.isnan(_cell(table, "zo", "average")["test_mean"])
    assert np.isnan(_cell(table, "zo", "average")["rank"])
    # Zero-shot first and white-box last, both shown, neither ranked.
    full = table[np.isclose(table["level_fraction"], 1.0)]
    assert list(dict.fromkeys(full["method"])) == ["zero-shot", "bbt", "cbbt", "zo", "coop"]
    assert _cell(table, "zero-shot", "average")["test_mean"] == pytest.approx(.25)
    assert _cell(table, "coop", "average")["test_mean"] == pytest.approx(.90)
    assert full.loc[full["kind"] != "black-box", "rank"].isna().all()
    assert set(table["level_fraction"]) == {.125, .25, .5, 1.0}


def test_the_frontier_averages_over_data_sets_with_a_band_over_seeds(tables):
    trials, curves, best = tables
    front = frontier_table(trials, curves, best)
    row = front[(front["panel"] == "average") & (front["method"] == "bbt")
                & (front["budget"] == 1000)].iloc[0]
    assert row["test_mean"] == pytest.approx(.505) and row["x_axis"] == "queries"
    # Per seed the mean over the data sets: (0.60 + 0.39) / 2 and (0.62 + 0.41) / 2.
    assert (row["test_lo"], row["test_hi"]) == pytest.approx((.495, .515))
    assert row["band"] == "min-max" and row["n_seeds"] == 2
    assert not ((front["panel"] == "average") & (front["method"] == "zo")).any()
    zs = front[(front["panel"] == "average") & (front["method"] == "zero-shot")]
    assert zs["test_mean"].tolist() == pytest.approx([.25])
    digits = front[(front["panel"] == "digits") & (front["method"] == "bbt")]
    assert digits["x"].tolist() == LEVELS and digits["val_mean"].tolist() == pytest.approx([.65] * 4)


def test_the_band_is_min_max_below_five_seeds_and_a_seeded_bootstrap_from_five():
    assert seed_band([.2, .5, .3]) == (.2, .5, "min-max")
    values = [.50, .52, .55, .61, .58, .49]
    lo, hi, kind = seed_band(values)
    assert kind == "bootstrap 95%" and seed_band(values) == (lo, hi, kind)
    assert min(values) <= lo < np.mean(values) < hi <= max(values)


def _settings(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` completed settings of one group; validation accuracy follows lr alone."""
    rng = np.random.default_rng(seed)
    lr = 10 ** rng.uniform(-4, -1, n)
    return pd.DataFrame({
        "method": "bbt", "dataset": "digits", "shots": 16, "status": "completed",
        "sample_id": [f"s{i}" for i in range(n)], "budget": 1000,
        "param_lr": lr, "param_popsize": rng.integers(10, 50, n),
        "param_sigma0": rng.uniform(0.1, 2.0, n),
        "final_val_acc": 0.3 + 0.1 * (np.log10(lr) + 4)})


def test_importance_finds_the_parameter_that_matters_and_omits_small_groups():
    importances, groups = param_importances(_settings(10))
    assert groups["computed"].tolist() == [True] and groups["n_settings"].tolist() == [10]
    assert importances["param"].iloc[0] == "lr"
    assert importances["importance"].iloc[0] > 0.5
    assert groups["source"].iloc[0] == "rebuilt from the trials table"
    importances, groups = param_importances(_settings(7))
    assert importances.empty and not groups["computed"].iloc[0]
    assert groups["note"].iloc[0] == "7 completed settings, fewer than 8"


def test_importance_reads_the_stored_study_when_there_is_one(tmp_path):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="bbt-digits-16shot", storage=url, direction="maximize")
    dists = {"sigma0": optuna.distributions.FloatDistribution(0.1, 2.0, log=True),
             "popsize": optuna.distributions.IntDistribution(10, 50)}
    rng = np.random.default_rng(1)
    for _ in range(9):  # the stored study's value follows popsize, not the table's lr
        p = {"sigma0": float(rng.uniform(0.1, 2.0)), "popsize": int(rng.integers(10, 50))}
        study.add_trial(optuna.trial.create_trial(params=p, distributions=dists,
                                                  value=p["popsize"] / 50))
    importances, groups = param_importances(_settings(3), tmp_path)
    assert groups["source"].iloc[0] == "stored study (optuna.db)"
    assert groups["n_settings"].iloc[0] == 9 and importances["param"].iloc[0] == "popsize"


def test_the_command_writes_the_main_table_frontier_and_importance(report):
    names = {p.name for p in report.iterdir()}
    assert {"report.md", "main_table.csv", "frontier.png", "frontier.csv", "importance.png",
            "importance.csv", "accuracy_vs_queries.csv", "queries_to_target.csv"} <= names
    for png in (n for n in names if n.endswith(".png")):  # every figure has its numbers
        assert png.removesuffix(".png") + ".csv" in names
    assert any(n.startswith("sensitivity_") for n in names)
    text = (report / "report.md").read_text()
    assert "### 16 shots, full budget (1,000 candidate evaluations)" in text
    assert "| method | digits | digits-inverted | average | avg rank |" in text
    assert "| zero-shot (no queries) | 30.0 ± 0.0 | 20.0 ± 0.0 | 25.0 | – |" in text
    assert "| bbt | 61.0 ± 1.4 | 40.0 ± 1.4 | 50.5 | 1.75 |" in text
    assert "| zo | 50.0 ± 0.0 | – | – | – |" in text
    assert "| coop (white-box) | 90.0 ± 0.0 | 90.0 ± 0.0 | 90.0 | – |" in text
    assert "come from the sweep's own oracle pool" in text
    assert "| bbt-digits-16shot | rebuilt from the trials table | 9 | sigma0 " in text
    assert "Omitted, fewer than 8 completed settings: bbt-digits-inverted-16shot (1), " in text
    assert "Every study was rebuilt from the trials table" in text
    assert "- `frontier.png`: " in text and "- `importance.png`: " in text
    table = pd.read_csv(report / "main_table.csv")
    assert len(table[(table["dataset"] == "average") & (table["method"] == "bbt")]) == 4
    imp = pd.read_csv(report / "importance.csv")
    assert imp.loc[imp["group"] == "bbt-digits-16shot", "param"].iloc[0] == "sigma0"
    front = pd.read_csv(report / "frontier.csv")
    assert set(front["panel"]) == {"digits", "digits-inverted", "average"}


# ---------------------------------------------------------------- per-budget runs


@pytest.fixture(scope="module")
def limits(tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame]:
    """bbt settings A and B each run once per limit (400, 1,000); cbbt read off its curve."""
    writer = ResultsWriter(tmp_path_factory.mktemp("results"), "limits", PARAMS)
    low = [50, 100, 200, 400]
    _write(writer, "bbt", "A", 1, budget=400, levels=low, val=.50, test=.50)
    _write(writer, "bbt", "B", 1, budget=400, levels=low, val=.60, test=.55)
    # A's 1,000 run looks excellent early on: read off its curve, it would win at 400.
    _write(writer, "bbt", "A", 1, vals=[.95, .95, .95, .80], tests=[.1, .1, .1, .75])
    _write(writer, "bbt", "B", 1, val=.70, test=.65)
    _write(writer, "cbbt", "C", 1, vals=[.3, .4, .5, .6], tests=[.3, .4, .5, .6])
    trials, curves = load_results(writer.sweep_dir)
    trials["budget_run"] = np.where(trials["method"] == "bbt", "per-budget", None)
    return trials, curves


def test_per_budget_trials_give_their_own_levels(limits):
    trials, curves = limits
    key = ("digits", 16, "candidate_evals")
    # The group's levels: the fractions of its largest and bbt's budgets; each method is
    # read at its own (the fractions of its own budget, or its per-budget runs).
    assert budget_levels(trials) == {key: [125, 250, 400, 500, 1000]}
    best = best_settings(trials, curves)
    bbt = best[best["method"] == "bbt"].set_index("budget")
    assert list(bbt.index) == [400, 1000] and bbt["per_budget"].all()
    assert bbt.loc[400, "sample_id"] == "B" and bbt.loc[400, "test_mean"] == pytest.approx(.55)
    assert bbt.loc[400, "level_fraction"] == pytest.approx(.4)
    assert bbt.loc[1000, "sample_id"] == "A" and bbt.loc[1000, "test_mean"] == pytest.approx(.75)
    cbbt = best[best["method"] == "cbbt"].set_index("budget")
    assert list(cbbt.index) == [125, 250, 500, 1000] and not cbbt["per_budget"].any()
    # The curve of the full-budget choice is its 1,000 run alone.
    assert best_curves(trials, curves, best).query("method == 'bbt'")["trial_id"].unique() \
        .tolist() == ["A-b1000-s1"]
    front = frontier_table(trials, curves, best)
    assert front.loc[front["method"] == "bbt", "x"].tolist() == [400, 1000]
    table = main_table(trials, best)
    assert set(table.loc[np.isclose(table["level_fraction"], .125), "method"]) == {"cbbt"}


def test_sensitivity_shows_per_budget_settings_at_their_full_budget_only(limits):
    from sweep.report.figure_data import sensitivity_data

    trials, _ = limits
    trials = trials.assign(param_sigma0=trials["sample_id"].map({"A": .1, "B": .2, "C": .3}))
    data = sensitivity_data(trials, ("digits", 16, "candidate_evals"))
    bbt = data[data["method"] == "bbt"]
    assert sorted(bbt["trial_id"].unique()) == ["A-b1000-s1", "B-b1000-s1"]


def test_without_the_column_or_with_nulls_trials_are_read_off_their_curves(limits):
    trials, curves = limits
    absent = best_settings(trials.drop(columns="budget_run"), curves)
    null = best_settings(trials.assign(budget_run=None), curves)
    pd.testing.assert_frame_equal(absent, null)
    assert not absent["per_budget"].any()
    assert sorted(set(absent["budget"])) == [125, 250, 500, 1000]
    # Read off the curves, both runs of a setting count at 500, A's with its early 0.95.
    row = absent[(absent["method"] == "bbt") & (absent["budget"] == 500)].iloc[0]
    assert row["sample_id"] == "A" and row["val_mean"] == pytest.approx((.50 + .95) / 2)
