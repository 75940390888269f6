"""CBBT's column of the embedded suite, with its released views and without augmentation (issue 28).

    python -m sweep.launch sweeps/embedded-suite-cbbt.toml          # CBBT's views, as released
    python -m sweep.launch sweeps/embedded-suite-cbbt-noaug.toml    # augment = false
    python -m bench.suite_cbbt results/embedded-suite-cbbt results/embedded-suite-cbbt-noaug

Each sweep is the suite's CBBT at 16 shots and its full budget (``sweeps/embedded-suite.toml``:
the same tasks, seeds, settings and space), one recipe of training views a sweep. Records
in ``bench/results/suite-cbbt.json``, per recipe and task, the test accuracy of the setting
chosen on validation (mean, std over seeds), the untuned start (z = 0), and what the
release's protocol would print instead: each seed's best checkpoint on test, averaged. Also
each sweep's wall time, from its rows. Prints docs/embedded.md's table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import methods
from bench import common
from bench.suite import SHOTS, _pct, _rows, run_facts, starts


def _recipe(params: dict) -> str:
    """How CBBT with ``params`` draws its training views: its ``views``, or "augment = false"."""
    config = methods.REGISTRY.make_config(
        "cbbt", {k: v for k, v in params.items() if k in ("augment", "views")})
    return f'views = "{config.views}"' if config.augment else "augment = false"


def measure(folder: Path) -> dict:
    from sweep.report import best_settings
    from sweep.results import load_results

    trials, curves = load_results(folder)
    trials = trials[(trials["method"] == "cbbt") & (trials["shots"] == SHOTS)]
    best = best_settings(trials, curves)
    tasks = {}
    for task in sorted(trials["dataset"].unique()):
        row = _rows(best, task, 1.0).loc["cbbt"]
        chosen = trials[(trials["sample_id"] == row.sample_id)]["trial_id"]
        on_test = curves[curves["trial_id"].isin(chosen)].groupby("trial_id")["test_acc"].max()
        tasks[task] = {"test": _pct(row.test_mean), "std": _pct(row.test_std),
                       "val": _pct(row.val_mean), "n_seeds": int(row.n_seeds),
                       "best_checkpoint_on_test": _pct(on_test.mean()),
                       "params": json.loads(json.dumps(row.params, default=float))}
    recipes = {_recipe(t["params"]) for t in tasks.values()}
    if len(recipes) != 1:
        raise ValueError(f"{folder}: one recipe of views a sweep; found {sorted(recipes)}")
    facts = run_facts(folder, trials)
    return {"results": str(folder), "recipe": recipes.pop(),
            "method_version": facts["method_version"]["cbbt"], "git_rev": facts["git_rev"],
            "trials": facts["trials"], "seeds": sorted(int(s) for s in trials["seed"].unique()),
            "restarts": facts["restarts"],  # trials gone on from a checkpoint
            "wall_min": facts["wall_min"], "tasks": tasks}


def render(report: dict) -> str:
    """| task | start | one column a recipe: test ± std (best checkpoint on test) |."""
    runs = report["runs"]
    lines = ["| task | start | " + " | ".join(f"`{r['recipe']}`" for r in runs) + " |",
             "|---|---|" + "---|" * len(runs)]
    for task, start in report["starts"].items():
        cells = [f"{r['tasks'][task]['test']:.1f} ± {r['tasks'][task]['std']:.1f} "
                 f"({r['tasks'][task]['best_checkpoint_on_test']:.1f})" for r in runs]
        lines.append(f"| `{task}` | {start:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.suite_cbbt",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+", help="one sweep folder a recipe")
    args = parser.parse_args(argv)
    runs = [measure(folder) for folder in args.results]
    tasks, seeds = sorted(runs[0]["tasks"]), runs[0]["seeds"]
    begun = starts(tasks, ["cbbt"], seeds)
    report = {"machine": common.machine(), "shots": SHOTS, "seeds": seeds,
              "starts": {t: begun[t]["cbbt"] for t in tasks}, "runs": runs}
    common.write("suite-cbbt", report)
    print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
