"""Writing a sweep report: ``report.md``, the main tables' CSV and the figures, from a results folder."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from sweep.report.figure_data import write_csv
from sweep.report.figures import method_styles, write_figures
from sweep.report.frontier import frontier_table, plot_frontier
from sweep.report.importance import param_importances, plot_importance, render_importance
from sweep.report.main_table import main_table, render_main_tables, white_box_note
from sweep.report.markdown import render_markdown
from sweep.report.tables import ZERO_SHOT, best_settings, queries_to_target, usable_trials
from sweep.report.targets import render_targets, target_comparison
from sweep.results import ResultsError, load_results, read_info
from sweep.spec import TargetsSection

__all__ = ["ReportError", "write_report"]


class ReportError(Exception):
    """The results cannot be reported on (no folder, no trials, no completed trial)."""


def write_report(sweep_dir: Path | str, out_dir: Path | str | None = None,
                 target: float | None = None, targets: TargetsSection | None = None) -> Path:
    """Write ``report.md``, ``main_table.csv`` and the figures of the sweep in ``sweep_dir``.

    The figures: accuracy versus queries, queries to target, sensitivity, the
    budget frontier and (for groups with enough settings) hyperparameter
    importance, each with a CSV of its numbers beside it.

    Args:
        sweep_dir: a sweep's results folder (``results/<sweep>``).
        out_dir: where to write (default ``sweep_dir/report``; created).
        target: validation accuracy for queries-to-target (None: per group,
            ``TARGET_FRACTION`` of the best black-box final validation accuracy).
        targets: published accuracies (a specification's ``[targets]``): a section that
            sets each result beside its target (``sweep.report.targets``).

    Returns:
        The path of ``report.md``.

    Raises:
        ReportError: the folder is missing or not a sweep's, holds no trials,
            or no trial completed; ``target`` is not in (0, 1].
    """
    if target is not None and not 0 < target <= 1:
        raise ReportError(f"--target must be a validation accuracy in (0, 1], e.g. 0.7; "
                          f"got {target}")
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise ReportError(f"{sweep_dir}: no such results folder")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            trials, curves = load_results(sweep_dir)
        except ResultsError as exc:
            raise ReportError(str(exc)) from None
        try:
            info = read_info(sweep_dir)  # the description, and the metric that selects
        except ResultsError as exc:
            raise ReportError(str(exc)) from None
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if trials.empty:
        raise ReportError(f"{sweep_dir}: no trials in the results folder")
    if usable_trials(trials).empty:
        errors = trials["error"].dropna().unique()
        raise ReportError(f"{sweep_dir}: no completed trials ({len(trials)} failed"
                          f"{': ' + str(errors[0]) if len(errors) else ''})")
    out = Path(out_dir) if out_dir is not None else sweep_dir / "report"
    out.mkdir(parents=True, exist_ok=True)

    best = best_settings(trials, curves, metric=info.metric)
    qt = queries_to_target(trials, curves, target, best)
    figures = write_figures(trials, curves, best, qt, out)
    main = main_table(trials, best)
    write_csv(main, out / "main_table.csv")
    black_box = trials.groupby("method")["black_box"].first().astype(bool).to_dict()
    styles = method_styles(sorted(black_box), black_box)
    frontier = frontier_table(trials, curves, best)
    if (frontier["method"] != ZERO_SHOT).any():
        figures.append(("frontier.png", plot_frontier(frontier, styles, out / "frontier.png")))
        write_csv(frontier, out / "frontier.png")
    importances, groups = param_importances(trials, sweep_dir, info.metric)
    if len(importances):
        figures.append(("importance.png",
                        plot_importance(importances, styles, out / "importance.png")))
        write_csv(importances, out / "importance.png")
    sections = (render_main_tables(main) + white_box_note(trials)
                + render_importance(importances, groups))
    text = render_markdown(sweep_dir, trials, best, qt, figures, target, sections, info)
    if targets is not None:
        text += "\n" + render_targets(target_comparison(trials, curves, targets, best), targets)
    path = out / "report.md"
    path.write_text(text, encoding="utf-8")
    return path
