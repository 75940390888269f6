"""The sweep report: selection by validation, tables, Markdown, figures, CLI (no Ray, no model)."""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from sweep.budget import CheckpointRecord, QueryCounts
from sweep.report import (
    best_settings,
    budget_levels,
    curve_band,
    queries_to_target,
    render_markdown,
    target_summary,
    write_report,
)
from sweep.report.__main__ import main
from sweep.results import ResultsWriter, TrialRecord, load_results

PARAMS = {"sigma0": "float", "popsize": "int", "lr": "float"}
BUDGET = 1000
#: Checkpoint query counts of the synthetic trials (geometric up to the budget; budget
#: levels 125, 250, 500, 1000 see checkpoints 3, 4, 5 and 7).
LEVELS = [20, 35, 62, 107, 188, 328, 572, 1000]
T0 = datetime(2026, 1, 2, tzinfo=timezone.utc)

# (method, setting, params, {seed: (val per checkpoint, test per checkpoint)}).
# bbt-A is best by validation at 500 and 1,000 queries, bbt-B at 125 and 250; bbt-B's
# test accuracy is far higher throughout, so a test-based choice would always pick B.
SWEEP = [
    ("bbt", "bbt-A", {"sigma0": 0.5, "popsize": 20}, {
        1: ([.40, .45, .50, .55, .60, .70, .78, .80], [.30, .35, .40, .45, .50, .55, .58, .60]),
        2: ([.42, .47, .52, .57, .72, .76, .80, .82], [.32, .37, .42, .47, .52, .57, .60, .62])}),
    ("bbt", "bbt-B", {"sigma0": 1.5, "popsize": 30}, {
        1: ([.66, .68, .70, .70, .70, .70, .70, .70], [.90] * 8),
        2: ([.68, .70, .72, .72, .72, .72, .72, .72], [.92] * 8)}),
    ("cbbt", "cbbt-A", {"lr": 0.01}, {
        1: ([.30, .40, .50, .55, .60, .62, .64, .65], [.30, .40, .50, .55, .60, .62, .64, .65]),
        2: ([.30, .40, .50, .55, .60, .62, .64, .66], [.30, .40, .50, .55, .60, .62, .64, .66])}),
    ("cbbt", "cbbt-B", {"lr": 0.001}, {
        1: ([.30, .35, .40, .45, .50, .55, .58, .60], [.30, .35, .40, .45, .50, .55, .58, .60]),
        2: ([.30, .35, .40, .45, .50, .55, .58, .61], [.30, .35, .40, .45, .50, .55, .58, .61])}),
    ("coop", "coop-A", {"lr": 0.02}, {
        1: ([.80, .85, .90, .92, .93, .94, .95, .95], [.80, .85, .90, .92, .93, .94, .95, .94]),
        2: ([.82, .87, .92, .94, .95, .96, .97, .97], [.82, .87, .92, .94, .95, .96, .97, .96])}),
    ("coop", "coop-B", {"lr": 0.002}, {
        1: ([.50, .55, .60, .65, .70, .75, .80, .85], [.50, .55, .60, .65, .70, .75, .80, .85]),
        2: ([.50, .55, .60, .65, .70, .75, .80, .85], [.50, .55, .60, .65, .70, .75, .80, .85])}),
]


def _q(n: int) -> QueryCounts:
    return QueryCounts(candidate_evals=n, calls=n, images=16 * n, text_sequences=10 * n)


def _cps(vals, tests, levels=LEVELS) -> list[CheckpointRecord]:
    return [CheckpointRecord(i, _q(q), 1.0, v, t, float(i))
            for i, (q, v, t) in enumerate(zip(levels, vals, tests))]


def _identity(method: str, sample: str, seed: int, **kw) -> dict:
    return dict(trial_id=f"{sample}-s{seed}", sweep="synth", sample_id=sample, method=method,
                model="promptsweep-tiny", dataset="digits", shots=16, seed=seed,
                budget_unit="candidate_evals", budget=BUDGET, black_box=method != "coop",
                device="cpu", started_at=T0, config={"sample": sample, "seed": seed}, **kw)


def write_sweep(root: Path) -> Path:
    """The synthetic sweep above, a failed trial and zero-shot; returns the sweep folder."""
    writer = ResultsWriter(root, "synth", PARAMS)
    for method, sample, params, seeds in SWEEP:
        for seed, (vals, tests) in seeds.items():
            cps = _cps(vals, tests)
            writer.write(TrialRecord(**_identity(method, sample, seed), params=params,
                                     queries=cps[-1].queries, checkpoints=cps, wall_s=1.0,
                                     stop_reasons={"budget": "spent"}))
    # A failed seed whose two checkpoints look excellent: failed trials never count.
    cps = _cps([.99, .99], [.99, .99])
    writer.write(TrialRecord.from_failure("RuntimeError: CUDA out of memory | retry",
                                          queries=cps[-1].queries, checkpoints=cps,
                                          **_identity("bbt", "bbt-C", 1),
                                          params={"sigma0": 0.1, "popsize": 10}))
    cps = _cps([.2] * 8, [.2] * 8)
    writer.write(TrialRecord(**_identity("bbt", "bbt-C", 2), params={"sigma0": 0.1, "popsize": 10},
                             queries=cps[-1].queries, checkpoints=cps))
    for seed in (1, 2):
        cps = [CheckpointRecord(0, QueryCounts(), math.nan, 0.30, 0.28, 0.0)]
        writer.write(TrialRecord(**_identity("zero-shot", "zero-shot-000", seed),
                                 checkpoints=cps, stop_reasons={"no_queries": "none"}))
    return writer.sweep_dir


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    return write_sweep(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def tables(sweep_dir):
    return load_results(sweep_dir)


@pytest.fixture(scope="module")
def report(sweep_dir) -> Path:
    return write_report(sweep_dir)


def _row(best, method, budget):
    sel = best[(best["method"] == method) & (best["budget"] == budget)]
    assert len(sel) == 1
    return sel.iloc[0]


def test_budget_levels_are_fractions_of_the_budget(tables):
    trials, _ = tables
    assert budget_levels(trials) == {("digits", 16, "candidate_evals"): [125, 250, 500, 1000]}


def test_best_setting_is_chosen_by_validation_never_by_test(tables):
    best = best_settings(*tables)
    assert set(best["method"]) == {"bbt", "cbbt", "coop"}  # zero-shot has no settings
    assert list(best.loc[best["method"] == "bbt", "sample_id"]) == ["bbt-B", "bbt-B", "bbt-A",
                                                                    "bbt-A"]
    full = _row(best, "bbt", 1000)
    # bbt-B has the higher test accuracy (0.91) but the lower validation accuracy (0.71).
    assert full["sample_id"] == "bbt-A" and full["n_seeds"] == 2 and full["n_settings"] == 3
    assert full["val_mean"] == pytest.approx(0.81)
    assert full["val_std"] == pytest.approx(np.std([0.80, 0.82], ddof=1))
    assert full["test_mean"] == pytest.approx(0.61)
    assert full["test_std"] == pytest.approx(np.std([0.60, 0.62], ddof=1))
    assert full["params"] == {"sigma0": 0.5, "popsize": 20}
    # At 500 queries each trial counts with checkpoint 5 (328 queries).
    mid = _row(best, "bbt", 500)
    assert mid["sample_id"] == "bbt-A" and mid["val_mean"] == pytest.approx(0.73)
    assert mid["queries"] == 328
    early = _row(best, "bbt", 125)
    assert early["sample_id"] == "bbt-B" and early["test_mean"] == pytest.approx(0.91)
    assert _row(best, "cbbt", 1000)["val_mean"] == pytest.approx(0.655)
    assert not _row(best, "coop", 1000)["black_box"]


def test_failed_trials_never_count(tables):
    trials, curves = tables
    best = best_settings(trials, curves)
    # bbt-C's failed seed reached 0.99; its completed seed 0.2: never the best.
    assert "bbt-C" not in set(best["sample_id"])
    assert (best["val_mean"] < 0.99).all()


def test_queries_to_target_matches_a_hand_computation(tables):
    trials, curves = tables
    qt = queries_to_target(trials, curves, target=0.70)
    bbt = qt[qt["method"] == "bbt"].set_index("seed")
    # bbt-A: seed 1 first reaches 0.70 exactly at checkpoint 5 (328), seed 2 at 4 (188).
    assert bbt.loc[1, "queries"] == 328 and bbt.loc[2, "queries"] == 188
    assert not qt.loc[qt["method"] == "cbbt", "reached"].any()
    summary = target_summary(qt).set_index("method")
    assert summary.loc["bbt", "median"] == pytest.approx((328 + 188) / 2)
    assert math.isinf(summary.loc["cbbt", "median"])
    assert summary.loc["coop", "median"] == 20  # 0.80 and 0.82 at the first checkpoint
    # Default: 0.9 x the best black-box final validation (bbt-A, 0.81); coop is white-box.
    qt = queries_to_target(trials, curves)
    assert qt["target"].unique() == pytest.approx([0.729])
    assert list(qt.loc[qt["method"] == "bbt", "queries"]) == [572, 328]


def test_methods_counted_in_different_units_are_never_compared(tmp_path):
    writer = ResultsWriter(tmp_path, "synth", PARAMS)
    for method, unit in (("bbt", "candidate_evals"), ("zip", "calls")):
        for seed in (1, 2):
            cps = _cps([.5] * 8, [.4] * 8)
            ident = {**_identity(method, f"{method}-A", seed), "budget_unit": unit}
            writer.write(TrialRecord(**ident, params={"lr": 0.01}, queries=cps[-1].queries,
                                     checkpoints=cps))
    trials, curves = load_results(writer.sweep_dir)
    best = best_settings(trials, curves)
    assert set(zip(best["method"], best["unit"])) == {("bbt", "candidate_evals"),
                                                      ("zip", "calls")}
    text = render_markdown(writer.sweep_dir, trials, best,
                           queries_to_target(trials, curves, best=best), [])
    assert "Budget units differ between methods (calls, candidate_evals)" in text
    assert "## digits, 16 shots (queries in mini-batch calls)" in text
    assert "## digits, 16 shots (queries in candidate evaluations)" in text


def test_a_trial_stopped_early_counts_with_the_checkpoints_it_reached(tmp_path):
    writer = ResultsWriter(tmp_path, "synth", PARAMS)
    for seed in (1, 2):
        cps = _cps([.6] * 8, [.6] * 8)
        writer.write(TrialRecord(**_identity("bbt", "bbt-A", seed), params={"sigma0": 0.5},
                                 queries=cps[-1].queries, checkpoints=cps))
        cps = _cps([.5, .6, .7], [.1, .1, .1])  # stopped by the scheduler at 62 queries
        writer.write(TrialRecord(**_identity("bbt", "bbt-B", seed), status="stopped",
                                 params={"sigma0": 1.0}, queries=cps[-1].queries,
                                 checkpoints=cps))
    best = best_settings(*load_results(writer.sweep_dir))
    full = _row(best, "bbt", 1000)
    assert full["sample_id"] == "bbt-B" and full["queries"] == 62
    assert full["val_mean"] == pytest.approx(0.7) and full["test_mean"] == pytest.approx(0.1)


def test_curve_band_holds_each_seed_between_checkpoints():
    import pandas as pd

    seeds = pd.DataFrame({"seed": [1, 1, 2, 2], "queries": [10, 30, 20, 30],
                          "val_acc": [0.1, 0.3, 0.2, 0.4]})
    band = curve_band(seeds, "val_acc")
    assert list(band["queries"]) == [10, 20, 30]
    assert list(band["n"]) == [1, 2, 2]
    assert band["mean"].tolist() == pytest.approx([0.1, 0.15, 0.35])
    assert band["lo"].tolist() == pytest.approx([0.1, 0.1, 0.3])
    assert band["hi"].tolist() == pytest.approx([0.1, 0.2, 0.4])


def test_markdown_has_the_tables(report, sweep_dir):
    text = report.read_text()
    assert report == sweep_dir / "report" / "report.md"
    assert text.startswith("# Sweep report: synth")
    assert "- Trials: 16: 15 completed, 0 stopped early by the scheduler, 1 failed" in text
    assert ("| bbt | 1,000 (1) | 1,000 | 81.0 ± 1.4 | 61.0 ± 1.4 | 2 | 3 | `bbt-A` | "
            "popsize=20, sigma0=0.5 |") in text
    assert "| bbt | 125 (1/8) | 107 | 71.0 ± 1.4 | 91.0 ± 1.4 | 2 | 3 | `bbt-B` |" in text
    assert ("| coop † | 1,000 (1) | 1,000 | 96.0 ± 1.4 | 95.0 ± 1.4 | 2 | 2 | `coop-A` | "
            "lr=0.02 |") in text
    assert "white-box (true gradients): an upper bound" in text
    assert "Zero-shot (hand-written template, no queries): validation 30.0 ± 0.0%" in text
    # The failed trial and its error, the table's pipe escaped.
    assert "| `bbt-C-s1` | bbt | 1 | RuntimeError: CUDA out of memory \\| retry |" in text
    assert "Queries to reach 72.9% validation accuracy" in text
    assert "| bbt | 2/2 | 450 |" in text  # the median of 572 and 328
    assert "| cbbt | 0/2 | not reached |" in text
    for name in ("accuracy_vs_queries.png", "queries_to_target.png", "sensitivity.png"):
        assert f"- `{name}`: " in text


@pytest.mark.parametrize("name", ["accuracy_vs_queries.png", "queries_to_target.png",
                                  "sensitivity.png"])
def test_figures_are_written_and_read(report, name):
    path = report.parent / name
    assert 20_000 < path.stat().st_size < 1_000_000
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    # Drawn at 300 dpi: at least one printed column (3.4 in) wide.
    assert image.shape[1] >= 900 and image.shape[0] >= 300
    assert image[..., :3].std() > 0.05  # not blank


def test_cli_writes_to_out_and_takes_a_target(sweep_dir, tmp_path, capsys):
    assert main([str(sweep_dir), "--out", str(tmp_path / "fig"), "--target", "0.7"]) == 0
    text = (tmp_path / "fig" / "report.md").read_text()
    assert "Queries to reach 70.0% validation accuracy" in text
    assert "| bbt | 2/2 | 258 |" in text  # the median of 328 and 188


@pytest.mark.parametrize("make", ["missing", "empty", "not-a-sweep", "only-failed"])
def test_cli_fails_with_one_line_and_status_2(tmp_path, capsys, make):
    folder = tmp_path / "synth"
    if make == "empty":
        (folder / "trials").mkdir(parents=True)
    elif make == "not-a-sweep":
        folder.mkdir()
    elif make == "only-failed":
        writer = ResultsWriter(tmp_path, "synth", {})
        writer.write(TrialRecord.from_failure("ValueError: bad", **_identity("bbt", "x", 1)))
    assert main([str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err


def test_cli_rejects_a_target_outside_0_1(sweep_dir, tmp_path, capsys):
    assert main([str(sweep_dir), "--out", str(tmp_path), "--target", "70"]) == 2
    assert "in (0, 1]" in capsys.readouterr().err


def test_module_runs_as_a_script(tmp_path):
    out = subprocess.run([sys.executable, "-m", "sweep.report", str(tmp_path / "nothing")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.startswith("error: ")


# ---------------------------------------------------------------- published targets

TARGET_SPEC = """
name = "synth"
[data]
datasets = ["digits"]
shots = [16]
[budget]
limit = 1000
[search]
methods = ["bbt", "cbbt", "zip"]
[targets]
source = "a made-up table"
shots = 16
[targets.bbt]
digits = 70.0
[targets.cbbt]
digits = 60.0
[targets.zip]
digits = 50.0
"""


def test_each_result_is_set_beside_its_published_target(sweep_dir, tmp_path, capsys):
    from sweep.report.targets import target_comparison
    from sweep.spec import parse_spec

    targets = parse_spec(TARGET_SPEC, "synth.toml").targets
    trials, curves = load_results(sweep_dir)
    table = target_comparison(trials, curves, targets).set_index("method")
    # bbt-A is chosen on validation (0.80 / 0.82), whatever bbt-B's test accuracy: 61 +- 1.41.
    assert table.loc["bbt", "result"] == pytest.approx(61.0)
    assert table.loc["bbt", "result_std"] == pytest.approx(100 * np.std([.60, .62], ddof=1))
    assert table.loc["bbt", "difference"] == pytest.approx(-9.0)
    assert table.loc["cbbt", "difference"] == pytest.approx(65.5 - 60.0)
    assert np.isnan(table.loc["zip", "result"]) and table.loc["zip", "n_seeds"] == 0
    spec = tmp_path / "synth.toml"
    spec.write_text(TARGET_SPEC)
    assert main([str(sweep_dir), "--out", str(tmp_path / "r"), "--targets", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "| bbt | digits | 16 | 70.00 | 61.0 ± 1.4 (2 seeds) | -9.0 |" in out
    assert "| zip | digits | 16 | 50.00 | not run | - |" in out
    assert "## Published targets" in (tmp_path / "r" / "report.md").read_text()
    spec.write_text(TARGET_SPEC.split("[targets]")[0])
    assert main([str(sweep_dir), "--out", str(tmp_path / "r"), "--targets", str(spec)]) == 2
    assert "has no [targets] section" in capsys.readouterr().err
