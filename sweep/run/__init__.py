"""One method, one setting, one seed, on one oracle: the objective and the ask/tell loop (no Ray).

``PromptObjective`` turns a method's search points into prompts and sends
them to an oracle (local or pooled); ``iter_run`` / ``run_method`` is the loop,
written once for every method, recording validation and test accuracy at the
budget's checkpoints; ``build_run`` and ``assemble`` wire a registered method
to an oracle.
"""

from sweep.run.loop import LoopState, RunResult, SplitScorer, iter_run, run_method, start_loop
from sweep.run.objective import (
    NonFiniteLossError,
    Objective,
    PromptObjective,
    draw_minibatch,
    rank_nonfinite_worst,
)
from sweep.run.runner import (
    DEFAULT_BUDGETS,
    Run,
    assemble,
    build_run,
    default_budget,
    layout_of,
    run_once,
)

__all__ = [
    "DEFAULT_BUDGETS",
    "LoopState",
    "NonFiniteLossError",
    "Objective",
    "PromptObjective",
    "Run",
    "RunResult",
    "SplitScorer",
    "assemble",
    "build_run",
    "default_budget",
    "draw_minibatch",
    "iter_run",
    "layout_of",
    "rank_nonfinite_worst",
    "run_method",
    "run_once",
    "start_loop",
]
