"""Every method once, at its default budget, on one task: a Markdown table (no Ray).

    python -m sweep.compare                        # embedded default, 16 shots, seed 1
    python -m sweep.compare --methods bpt-vlm cbbt bbt coop --seed 2
    python -m sweep.compare --limit 400            # every method at 400 queries of its unit

Validation and test accuracy are of the final recommendation; the gain is
over zero-shot with the data set's hand-written template. "start test" is the
method's untuned prompt (z = 0), which for methods without an initialising
phrase is not the template. White-box CoOp is
the upper bound and is marked as not black-box.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from sweep.data import few_shot, load_dataset
from sweep.oracle import load_model
from sweep.run import build_run, default_budget, run_once
from sweep.spec import EMBEDDED_MODEL, SWEEP_METHODS, ModelSpec

DEFAULT_METHODS = ("zero-shot", "bpt-vlm", "bpt-vlm-deep", "bbt", "cbbt", "zip", "blackvip-tokens",
                   "coop")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweep.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                        help=f"registered names (default: {' '.join(DEFAULT_METHODS)})")
    parser.add_argument("--model", default=EMBEDDED_MODEL)
    parser.add_argument("--pretrained", default=None)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--limit", type=int, default=None,
                        help="every method's budget, in its own unit (default: each method's "
                             "published budget)")
    args = parser.parse_args(argv)
    for name in args.methods:
        SWEEP_METHODS.entry(name)  # fail on a typo before any work
    if args.limit is not None and args.limit < 0:
        parser.error(f"--limit must be >= 0; got {args.limit}")
    if args.threads:
        torch.set_num_threads(args.threads)

    model = load_model(ModelSpec(name=args.model, pretrained=args.pretrained, checkpoint=args.checkpoint))
    task = few_shot(load_dataset(args.dataset, args.data_root), args.shots, args.seed)
    rows = []
    zero_shot_test = None
    for name in args.methods:
        run = build_run(name, None, model, task, default_budget(name, args.limit), args.seed)
        # The untuned start (z = 0): for methods without a phrase it is not the template.
        start_test = run.scorer.score(run.method, np.zeros(run.method.dim), "test")
        start = time.perf_counter()
        result = run_once(run)
        wall = time.perf_counter() - start
        last = result.checkpoints[-1]
        if zero_shot_test is None:
            zero_shot_test = run.oracle.zero_shot("test").accuracies[0]
            zero_shot_val = run.oracle.zero_shot("val").accuracies[0]
        unit, limit = run.oracle.budget.unit, run.oracle.budget.limit
        rows.append((name, run.method.black_box, f"{limit:,} {unit}", f"{result.used[unit]:,}",
                     start_test, last.val_acc, last.test_acc, wall))
        print(f"{name}: val {last.val_acc:.2%} test {last.test_acc:.2%} "
              f"({result.used[unit]:,} {unit}, {wall:.0f} s)", file=sys.stderr)

    print(f"\n{task.dataset}, {args.shots} shots, seed {args.seed}, model {model.spec.label}; "
          f"zero-shot val {zero_shot_val:.1%}, test {zero_shot_test:.1%}\n")
    print("| method | black-box | budget | used | start test | val acc | test acc | gain over zero-shot | wall s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, black, budget, used, start_test, val, test, wall in rows:
        gain = 100 * (test - zero_shot_test)
        print(f"| {name} | {'yes' if black else 'no (upper bound)'} | {budget} | {used} | "
              f"{start_test:.1%} | {val:.1%} | {test:.1%} | {gain:+.1f} | {wall:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
