"""How well each zeroth-order estimator recovers the true gradient of a real prompt loss.

    python -m sweep.estimator_check                # embedded default, CBBT's layout

On a glass-box oracle (16 shots, seed 1) with CBBT's prompt (one context
token initialised from "a", searched directly), the true gradient of the
full-training-set loss comes from autograd; each estimator is drawn
``--repeats`` times for each q and the mean cosine to the true gradient is
printed as a Markdown table. The oracle counts every loss it computes.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import methods
from methods.estimators import ESTIMATORS, EstimatorConfig, make_estimator
from sweep.budget import BudgetSpec
from sweep.data import few_shot, load_dataset
from sweep.oracle import ClipOracle, load_model
from sweep.run import PromptObjective, layout_of
from sweep.spec import ModelSpec


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-300))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweep.estimator_check",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--estimators", nargs="+", default=sorted(ESTIMATORS))
    parser.add_argument("--qs", nargs="+", type=int, default=[1, 4, 16, 64, 256])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--shots", type=int, default=16)
    args = parser.parse_args(argv)

    model = load_model(ModelSpec())
    task = few_shot(load_dataset("digits"), args.shots, args.seed)
    config = methods.REGISTRY.make_config("cbbt")
    oracle = ClipOracle(model, task, layout_of(config), BudgetSpec(), glass_box=True)
    objective = PromptObjective(oracle, config, args.seed)
    x = np.zeros(objective.space.dim)
    true = objective(x[None], gradient=True).gradients[0]
    rng = np.random.default_rng(args.seed)
    table = {}
    for name in args.estimators:
        for q in args.qs:
            if name == "coordinate" and q > objective.space.dim:
                continue  # a coordinate block cannot exceed the dimension
            cosines = []
            for _ in range(args.repeats):
                est = make_estimator(name, EstimatorConfig(q=q), objective.space.dim)
                points = est.perturb(x, rng)
                losses = objective(points).losses
                cosines.append(cosine(est.combine(x, points, losses), true))
            table[name, q] = (np.mean(cosines), np.std(cosines))
        print(f"{name}: " + ", ".join(f"q={q} {table[name, q][0]:.3f}" for q in args.qs
                                      if (name, q) in table), file=sys.stderr)

    print(f"\nmean cosine (± std over {args.repeats} draws) to the autograd gradient; "
          f"CBBT layout, dim {objective.space.dim}, {args.shots} shots, seed {args.seed}, "
          f"|grad| = {np.linalg.norm(true):.3g}\n")
    print("| estimator | " + " | ".join(f"q = {q}" for q in args.qs) + " |")
    print("|---|" + "---|" * len(args.qs))
    for name in args.estimators:
        cells = " | ".join(f"{table[name, q][0]:.3f} ± {table[name, q][1]:.3f}" if (name, q) in table
                           else "- (q > dim)" for q in args.qs)
        print(f"| {name} | {cells} |")
    print(f"\noracle queries: {oracle.used.candidate_evals:,} candidate evaluations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
