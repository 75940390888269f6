"""Tables and figures from a sweep's results, as the papers show them (pandas, matplotlib; no torch, no Ray).

``write_report`` writes ``report.md`` (``render_markdown``) and the figures
(``write_figures``) of a results folder; the tables behind them
(``best_settings``, ``queries_to_target``, ...) work on the frames of
``sweep.results.load_results``. ``python -m sweep.report`` is the command.
"""

from sweep.report.figures import method_styles, write_figures
from sweep.report.markdown import render_markdown
from sweep.report.tables import (
    DEFAULT_FRACTIONS, GROUP, TARGET_FRACTION, best_curves, best_settings, budget_levels,
    checkpoint_table, curve_band, default_targets, in_group, queries_to_target,
    swept_params, target_summary, zero_shot_summary,
)
from sweep.report.write import ReportError, write_report

__all__ = [
    "DEFAULT_FRACTIONS",
    "GROUP",
    "TARGET_FRACTION",
    "ReportError",
    "best_curves",
    "best_settings",
    "budget_levels",
    "checkpoint_table",
    "curve_band",
    "default_targets",
    "in_group",
    "method_styles",
    "queries_to_target",
    "render_markdown",
    "swept_params",
    "target_summary",
    "write_figures",
    "write_report",
    "zero_shot_summary",
]
