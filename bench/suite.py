"""The embedded suite's criteria, measured on its reference run (issue 15).

    python -m sweep.launch sweeps/embedded-suite.toml     # the reference run
    python -m bench.suite results/embedded-suite          # this: criteria and tables
    python -m bench.suite --probe digits digits-noise     # which tasks leave room
    python -m bench.suite results/embedded-suite-craft-sharpzo --out suite-craft-sharpzo

Reads the run's tables (settings chosen on validation, ``sweep.report``'s
``best_settings``, test accuracy reported), scores each black-box method's
untuned start (z = 0, each seed's own draw, as ``sweep.compare`` does) on the
local oracle, and records in ``bench/results/suite.json``, per task at 16
shots: zero-shot, white-box CoOp and each black-box method's test accuracy
(mean, std over seeds) at its full budget and at 1/8 of it, and its start;
whether each of the issue's criteria holds; and for CBBT, run once per budget
level, how far its levels read off the full run's curve differ from the runs
planned for them; and the run's own facts: its trials, wall time, revision and the command
that made it. ``--out`` names the file (a run of some methods alone, at the suite's
protocol). Prints docs/embedded.md's tables.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from bench import common

SHOTS = 16
#: The suite's black-box methods, under their published names.
BLACK_BOX = ("bpt-vlm", "bbt", "cbbt", "zip", "blackvip-tokens", "craft", "sharpzo")
#: The issue's thresholds, in points of test accuracy.
ZERO_SHOT_MAX, COOP_MARGIN, START_MARGIN, GAIN, RISE = 70.0, 15.0, 10.0, 10.0, 5.0


def _pct(x: float) -> float:
    return round(100 * float(x), 2)


def starts(tasks: list[str], names: list[str], seeds: list[int]) -> dict[str, dict[str, float]]:
    """Each method's untuned start (z = 0) on each task: mean test accuracy over seeds."""
    import torch

    from sweep.data import few_shot, load_dataset
    from sweep.oracle import load_model
    from sweep.run import build_run, default_budget
    from sweep.spec import ModelSpec

    torch.set_num_threads(1)
    model = load_model(ModelSpec())
    out: dict[str, dict[str, float]] = {}
    for task_name in tasks:
        dataset, out[task_name] = load_dataset(task_name), {}
        for name in names:
            accs = []
            for seed in seeds:
                run = build_run(name, None, model, few_shot(dataset, SHOTS, seed),
                                default_budget(name), seed)
                accs.append(run.scorer.score(run.method, np.zeros(run.method.dim), "test"))
            out[task_name][name] = _pct(np.mean(accs))
    return out


def probe(tasks: list[str], seed: int = 1) -> dict:
    """Which tasks leave room, before any sweep: zero-shot, white-box CoOp at its default
    budget and each black-box method's untuned start, on one seed (16 shots)."""
    import torch

    from sweep.data import few_shot, load_dataset
    from sweep.oracle import load_model
    from sweep.run import build_run, default_budget, run_once
    from sweep.spec import ModelSpec

    torch.set_num_threads(1)
    model = load_model(ModelSpec())
    out = {}
    for name in tasks:
        task = few_shot(load_dataset(name), SHOTS, seed)
        row = {}
        for method in (*BLACK_BOX, "coop"):
            run = build_run(method, None, model, task, default_budget(method), seed)
            row[f"{method} start"] = _pct(run.scorer.score(run.method, np.zeros(run.method.dim),
                                                           "test"))
        row["zero-shot"] = _pct(run.oracle.zero_shot("test").accuracies[0])
        row["coop"] = _pct(run_once(run).checkpoints[-1].test_acc)
        starts_ok = all(row[f"{m} start"] <= row["coop"] - START_MARGIN for m in BLACK_BOX)
        row["room"] = bool(row["zero-shot"] <= ZERO_SHOT_MAX
                           and row["coop"] >= row["zero-shot"] + COOP_MARGIN and starts_ok)
        out[name] = row
        print(name, row, file=sys.stderr)
    return {"machine": common.machine(), "seed": seed, "shots": SHOTS, "tasks": out}


def _rows(best: pd.DataFrame, dataset: str, fraction: float) -> pd.DataFrame:
    # A per-budget level is a rounded share of a published budget (6,023 of 48,188 for 1/8).
    at = best[(best["dataset"] == dataset) & (best["shots"] == SHOTS)
              & np.isclose(best["level_fraction"], fraction, rtol=0.01) & best["sample_id"].notna()]
    return at.set_index("method")


def cbbt_two_ways(trials: pd.DataFrame, curves: pd.DataFrame) -> list[dict]:
    """Per task and shots, CBBT's level values: from the runs planned for each level, and
    read off the full-budget runs' curves instead (the same settings' full runs)."""
    from sweep.report import best_settings

    cbbt = trials[trials["method"] == "cbbt"]
    if cbbt.empty or "budget_run" not in cbbt:
        return []
    full = cbbt.groupby(["dataset", "shots"])["budget"].transform("max")
    per = best_settings(cbbt, curves)
    curve = best_settings(cbbt[cbbt["budget"] == full].assign(budget_run="curve"), curves)
    out = []
    for (dataset, shots), p in per.groupby(["dataset", "shots"], sort=True):
        c = curve[(curve["dataset"] == dataset) & (curve["shots"] == shots)]
        # the k-th level of each: the per-budget runs' budgets, the curve's fractions of the full
        for a, b in zip(p.sort_values("budget").itertuples(), c.sort_values("budget").itertuples()):
            if a.budget >= p["budget"].max():
                continue
            out.append({"dataset": dataset, "shots": int(shots), "budget": int(a.budget),
                        "curve_budget": int(b.budget), "per_budget_test": _pct(a.test_mean),
                        "curve_test": _pct(b.test_mean),
                        "difference": round(_pct(a.test_mean) - _pct(b.test_mean), 2)})
    return out


def run_facts(results: Path, trials: pd.DataFrame) -> dict:
    """What made a sweep's rows: its command, trials, wall time (first start to last end),
    revisions, method versions and trials gone on from a checkpoint."""
    end = (trials["started_at"] + pd.to_timedelta(trials["wall_s"], unit="s")).max()
    spec = Path("sweeps") / f"{results.name}.toml"
    return {"command": f"python -m sweep.launch {spec}" if spec.is_file() else None,
            "trials": len(trials),
            "wall_min": round((end - trials["started_at"].min()).total_seconds() / 60, 1),
            "git_rev": sorted(trials["git_rev"].unique()),
            "method_version": {m: sorted(int(v) for v in g["method_version"].unique())
                               for m, g in trials.groupby("method")},
            "restarts": int(trials["restarts"].sum())}


def measure(results: Path, with_starts: bool = True) -> dict:
    from sweep.report import best_settings, zero_shot_summary
    from sweep.results import load_results

    trials, curves = load_results(results)
    best = best_settings(trials, curves)
    zs = zero_shot_summary(trials).set_index(["dataset", "shots"])
    tasks = sorted(trials["dataset"].unique())
    black = sorted(trials.loc[trials["black_box"] & (trials["method"] != "zero-shot"),
                              "method"].unique())
    seeds = sorted(int(s) for s in trials["seed"].unique())
    start = starts(tasks, black, seeds) if with_starts else {}
    per_task, rankings = {}, {}
    for task in tasks:
        full, eighth = _rows(best, task, 1.0), _rows(best, task, 0.125)
        bb = full.loc[[m for m in black if m in full.index]]
        methods = {m: {"test": _pct(r.test_mean), "std": _pct(r.test_std),
                       "val": _pct(r.val_mean), "n_seeds": int(r.n_seeds),
                       "eighth_test": _pct(eighth.loc[m, "test_mean"]) if m in eighth.index
                       else None, "start": start.get(task, {}).get(m)}
                   for m, r in bb.iterrows()}
        coop = _pct(full.loc["coop", "test_mean"]) if "coop" in full.index else math.nan
        zero = _pct(zs.loc[(task, SHOTS), "test_mean"]) if (task, SHOTS) in zs.index else math.nan
        if len(methods) < 2:  # an unfinished run
            continue
        by_val = sorted(methods, key=lambda m: -methods[m]["val"])
        by_test = sorted(methods, key=lambda m: -methods[m]["test"])
        rankings[task] = by_test
        winner, (first, second) = by_val[0], by_test[:2]
        se = math.sqrt((methods[first]["std"] ** 2 + methods[second]["std"] ** 2)
                       / min(methods[first]["n_seeds"], methods[second]["n_seeds"]))
        w = methods[winner]
        per_task[task] = {
            "zero_shot": zero, "coop": coop, "methods": methods,
            "winner_on_validation": winner,
            "criteria": {
                "zero_shot_at_most_70": zero <= ZERO_SHOT_MAX,
                "coop_15_above_zero_shot": coop >= zero + COOP_MARGIN,
                "every_start_10_below_coop": bool(start) and all(
                    m["start"] is not None and m["start"] <= coop - START_MARGIN
                    for m in methods.values()),
                "winner_gains_10_over_its_start": w["start"] is not None
                and w["test"] - w["start"] >= GAIN,
                "two_best_differ_by_2_se": methods[first]["test"] - methods[second]["test"] > 2 * se,
                "winner_rises_5_from_an_eighth": w["eighth_test"] is not None
                and w["test"] - w["eighth_test"] >= RISE,
            },
            "two_best": [first, second], "two_best_se": round(se, 2),
        }
    orders = {tuple(r) for r in rankings.values()}
    separated = sum(t["criteria"]["two_best_differ_by_2_se"] for t in per_task.values())
    return {
        "machine": common.machine(), "results": str(results), "shots": SHOTS, "seeds": seeds,
        "run": run_facts(results, trials), "tasks": per_task,
        "suite_criteria": {
            "each_task": {name: all(v for k, v in t["criteria"].items()
                                    if k not in ("two_best_differ_by_2_se",
                                                 "winner_rises_5_from_an_eighth"))
                          for name, t in per_task.items()},
            "two_tasks_separate_or_ranking_changes": separated >= 2 or len(orders) > 1,
            "ranking_changes_between_tasks": len(orders) > 1,
            "a_winner_rises_5_from_an_eighth": any(
                t["criteria"]["winner_rises_5_from_an_eighth"] for t in per_task.values()),
        },
        "cbbt_per_budget_vs_curve": cbbt_two_ways(trials, curves),
    }


def render(report: dict) -> str:
    """docs/embedded.md's tables: per task, each method at the full budget (and its start)."""
    tasks = report["tasks"]
    methods = sorted({m for t in tasks.values() for m in t["methods"]})
    lines = ["| task | zero-shot | CoOp (white-box) | " + " | ".join(methods) + " |",
             "|---|---|---|" + "---|" * len(methods)]
    for name, t in tasks.items():
        cells = [f"{t['methods'][m]['test']:.1f} ± {t['methods'][m]['std']:.1f} "
                 f"(start {t['methods'][m]['start']:.1f})" if m in t["methods"]
                 and t["methods"][m]["start"] is not None else
                 f"{t['methods'][m]['test']:.1f} ± {t['methods'][m]['std']:.1f}"
                 if m in t["methods"] else "–" for m in methods]
        lines.append(f"| `{name}` | {t['zero_shot']:.1f} | {t['coop']:.1f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.suite", description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="?", default=Path("results/embedded-suite"))
    parser.add_argument("--out", default="suite",
                        help="the file's name under bench/results (default: suite)")
    parser.add_argument("--no-starts", action="store_true",
                        help="skip scoring the methods' untuned starts (no model is loaded)")
    parser.add_argument("--probe", nargs="+", metavar="TASK", default=None,
                        help="instead: zero-shot, CoOp and every start on these tasks, one seed "
                             "(bench/results/suite-probe.json)")
    args = parser.parse_args(argv)
    if args.probe:
        found = probe(args.probe)
        common.write("suite-probe", found)
        for name, row in found["tasks"].items():
            print(f"| `{name}` | " + " | ".join(f"{v}" for v in row.values()) + " |")
        return 0
    report = measure(args.results, with_starts=not args.no_starts)
    path = common.write(args.out, report)
    print(render(report))
    print("\n" + "\n".join(f"{k}: {v}" for k, v in report["suite_criteria"].items()))
    for name, t in report["tasks"].items():
        failed = [k for k, v in t["criteria"].items() if not v]
        print(f"{name}: winner {t['winner_on_validation']}; not met: {', '.join(failed) or '-'}")
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
