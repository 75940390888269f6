"""A sweep's results as a Markdown summary and paper figures.

    python -m sweep.report results/default                 # writes results/default/report/
    python -m sweep.report results/default --out fig --target 0.7
    python -m sweep.report results/reproduce-bpt-vlm --targets sweeps/reproduce/bpt-vlm.toml

Writes ``report.md``: the sweep and its trials; the main tables (per shot
count, query unit and budget level: methods x data sets, test accuracy of the
setting chosen on validation as mean ± std over seeds, the average over the
data sets and the black-box methods' average rank; zero-shot and white-box
rows marked, not ranked); hyperparameter importance (Optuna's fANOVA per
sampling group with 8 or more completed settings, from ``optuna.db`` or
rebuilt from the trials table; others omitted with a note); and per data set
and shot count the best setting of each method at each budget level. Also
``main_table.csv`` and the figures ``accuracy_vs_queries.png``,
``queries_to_target.png``, ``sensitivity.png`` (one per data set and shot
count when there are several), ``frontier.png`` (best validated test
accuracy against the budget, per data set and averaged, band over seeds:
min-max, or a bootstrap 95% interval with 5 seeds or more) and
``importance.png``, each with a CSV of the numbers it draws beside it
(``frontier.csv``, ...). Settings are chosen by validation accuracy only
(``sweep.report.tables``). ``--targets SPEC`` adds, and prints, each result
beside the published accuracy in the specification's ``[targets]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sweep.errors import PromptTuningError
from sweep.report import TARGET_FRACTION, ReportError, write_report
from sweep.spec import load_spec


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (2: nothing to report on)."""
    parser = argparse.ArgumentParser(prog="python -m sweep.report",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", type=Path, help="a sweep's results folder")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: RESULTS_DIR/report)")
    parser.add_argument("--target", type=float, default=None,
                        help="validation accuracy (a fraction) for queries-to-target (default: "
                             f"{TARGET_FRACTION:g} x the best black-box final validation "
                             "accuracy of each data set, shots and unit)")
    parser.add_argument("--targets", type=Path, default=None,
                        help="a specification with [targets] (sweeps/reproduce/): each result "
                             "beside its published accuracy")
    args = parser.parse_args(argv)
    try:
        targets = None
        if args.targets is not None:
            targets = load_spec(args.targets, check_paths=False).targets
            if targets is None:
                raise ReportError(f"{args.targets} has no [targets] section")
        path = write_report(args.results_dir, args.out, args.target, targets)
    except (ReportError, PromptTuningError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if targets is not None:
        text = path.read_text(encoding="utf-8")
        print(text[text.index("## Published targets"):])
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
