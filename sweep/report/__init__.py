"""Tables and figures from a sweep's results, as the papers show them (pandas, matplotlib; no torch, no Ray).

``write_report`` writes ``report.md`` (``render_markdown``), the main tables
(``main_table``: methods x data sets per shot count and budget level, with
the average and average rank, also ``main_table.csv``) and the figures
(``write_figures``; the budget frontier, ``frontier_table``; hyperparameter
importance, ``param_importances``), each figure with a CSV of the numbers it
draws. The tables behind them (``best_settings``, ``queries_to_target``, ...)
work on the frames of ``sweep.results.load_results``. ``python -m
sweep.report`` is the command. Optuna is imported only to compute importances.
"""

from sweep.report.figures import method_styles, write_figures
from sweep.report.frontier import BOOTSTRAP_SEEDS, frontier_table, plot_frontier, seed_band
from sweep.report.importance import (
    MIN_SETTINGS, param_importances, plot_importance, render_importance, study_from_trials,
)
from sweep.report.main_table import main_table, render_main_tables
from sweep.report.markdown import render_markdown
from sweep.report.tables import (
    DEFAULT_FRACTIONS, GROUP, PER_BUDGET, TARGET_FRACTION, best_curves, best_settings,
    budget_levels, checkpoint_table, curve_band, default_targets, in_group, level_values,
    queries_to_target, swept_params, target_summary, zero_shot_summary,
)
from sweep.report.write import ReportError, write_report

__all__ = [
    "BOOTSTRAP_SEEDS",
    "DEFAULT_FRACTIONS",
    "GROUP",
    "MIN_SETTINGS",
    "PER_BUDGET",
    "TARGET_FRACTION",
    "ReportError",
    "best_curves",
    "best_settings",
    "budget_levels",
    "checkpoint_table",
    "curve_band",
    "default_targets",
    "frontier_table",
    "in_group",
    "level_values",
    "main_table",
    "method_styles",
    "param_importances",
    "plot_frontier",
    "plot_importance",
    "queries_to_target",
    "render_importance",
    "render_main_tables",
    "render_markdown",
    "seed_band",
    "study_from_trials",
    "swept_params",
    "target_summary",
    "write_figures",
    "write_report",
    "zero_shot_summary",
]
