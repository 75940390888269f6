"""A sweep's results as a Markdown summary and paper figures.

    python -m sweep.report results/default                 # writes results/default/report/
    python -m sweep.report results/default --out fig --target 0.7

Writes ``report.md`` (the sweep, its trials, and per data set and shot count
the best setting of each method at each budget level, validation and test
accuracy as mean ± std over seeds), ``accuracy_vs_queries.png``,
``queries_to_target.png`` and ``sensitivity.png`` (one per data set and shot
count when there are several). Settings are chosen by validation accuracy
only (``sweep.report.tables``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sweep.report import TARGET_FRACTION, ReportError, write_report


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
    args = parser.parse_args(argv)
    try:
        path = write_report(args.results_dir, args.out, args.target)
    except (ReportError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
