"""The main job: ``python -m sweep.launch [SPEC] [--address ADDR] [--resume] [--smoke-test] [--plan]``.

With no SPEC, the embedded default (sweeps/default.toml): a small complete
sweep on the tiny CLIP and the digits, on a private local Ray instance. On a
cluster, ``--address auto`` joins the running Ray cluster.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from sweep.errors import PromptTuningError


#: The largest budget of a smoke test, in candidate evaluations.
SMOKE_LIMIT = 120


def _smoke(spec):
    """A few seconds' worth of the same sweep: one seed, one setting, one budget of at most
    ``SMOKE_LIMIT`` candidate evaluations (no budget levels, no method's own budget), under
    the sweep's name with ``-smoke`` added."""
    limit = SMOKE_LIMIT if spec.budget.published else min(spec.budget.limit, SMOKE_LIMIT)
    budget = dataclasses.replace(spec.budget, published=False, unit="candidate_evals", limit=limit,
                                 fraction=1.0, limits=(), levels=())
    methods = tuple(dataclasses.replace(m, samples=1, budget=None) for m in spec.methods)
    return dataclasses.replace(
        spec, name=f"{spec.name}-smoke", budget=budget, methods=methods,
        data=dataclasses.replace(spec.data, seeds=spec.data.seeds[:1]),
        search=dataclasses.replace(spec.search, samples=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweep.launch", description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", help="sweep specification (TOML); default: the embedded default")
    parser.add_argument("--address", default=None, help="join a Ray cluster ('auto' on a cluster node)")
    parser.add_argument("--resume", action="store_true", help="complete an interrupted sweep")
    parser.add_argument("--smoke-test", action="store_true", help="one seed, one setting, a tiny budget")
    parser.add_argument("--dry-run", action="store_true", help="check the spec and print the plan only")
    parser.add_argument("--plan", action="store_true",
                        help="the plan with its requests, FLOPs and GPU hours (no Ray, no images, "
                             "no data root needed)")
    parser.add_argument("--gpu", default="a10g", choices=("a10g", "h100"),
                        help="the GPU the --plan cost model assumes (default: a10g)")
    parser.add_argument("--results", default="results", help="results root (default: results/)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    # Weights come from the local cache only (the user's HF_HUB_OFFLINE wins); Ray passes it
    # to every actor and trial (sweep.tuning.start_ray).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from sweep.spec import load_spec
        from sweep.tuning import plan_sweep, run_sweep

        spec = load_spec(args.spec, check_paths=not args.plan)
        if args.smoke_test:
            spec = _smoke(spec)
        if args.dry_run or args.plan:
            plan = plan_sweep(spec, args.results, args.resume)
            print(plan.describe())
            if args.plan:
                from sweep.tuning import DEVICES, plan_cost

                print(plan_cost(plan, DEVICES[args.gpu]))
            return 0
        run_sweep(spec, address=args.address, resume=args.resume, results_root=args.results,
                  progress=not args.quiet)
    except PromptTuningError as exc:
        # One line, whatever the message quotes (a library's multi-line reason, a path).
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
