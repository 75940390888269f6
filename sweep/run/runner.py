"""One method, one setting, one seed, on one oracle: the pieces wired together (no Ray).

``build_run`` turns a method name and its hyperparameters into (method,
objective, scorer) on a loaded model and few-shot task; ``run_once`` runs it.
The sweep's trials and the comparison table both go through here.
"""

from __future__ import annotations

from dataclasses import dataclass

from typing import TYPE_CHECKING

import numpy as np

from methods.base import Method
from sweep.budget import BudgetSpec
from sweep.data import FewShot
from sweep.oracle import PromptLayout
from sweep.run.loop import RunResult, SplitScorer, run_method
from sweep.run.objective import PromptObjective
from sweep.spec import SWEEP_METHODS

if TYPE_CHECKING:  # the model's side loads torch: imported where a local run needs it
    from sweep.oracle import ClipOracle, LoadedModel, PooledOracle

__all__ = ["DEFAULT_BUDGETS", "Run", "assemble", "build_run", "default_budget", "layout_of",
           "run_once"]

#: Each method's default budget (unit, limit), from its paper's protocol (METHODS.md).
DEFAULT_BUDGETS: dict[str, tuple[str, int]] = {
    # BPT-VLM: 3,600 candidate evaluations, its smallest published budget (Caltech101, Pets, Food101).
    **dict.fromkeys(("bpt-vlm", "bpt-vlm-deep", "bpt-vlm-lmcmaes", "bpt-vlm-mmes", "bpt-vlm-lmmaes"),
                    ("candidate_evals", 3600)),
    # BBT: 8,000 calls of one candidate on the whole training set.
    "bbt": ("candidate_evals", 8000),
    # CBBT: 150 epochs of 32-image steps, 257 losses per step; on 16 shots x 10 classes
    # that is 150 * 5 * 257 = 192,750 candidate evaluations on mini-batches.
    **dict.fromkeys(("cbbt", "cbbt-adapter", "cbbt-tip"), ("candidate_evals", 192_750)),
    # ZIP: 5,000 calls of one mini-batch (<= 128 images); ZIP re-ran BlackVIP at the same budget.
    **dict.fromkeys(("zip", "blackvip-tokens"), ("calls", 5000)),
    # CraFT and SharpZO: 8,000 candidate evaluations at 8 and 16 shots (2,000 to 4,000 below).
    **dict.fromkeys(("craft", "sharpzo"), ("candidate_evals", 8000)),
    # White-box CoOp (not black-box): 300 full-batch gradient steps.
    "coop": ("candidate_evals", 300),
    "zero-shot": ("candidate_evals", 0),
}


def default_budget(name: str, limit: int | None = None) -> BudgetSpec:
    """Method ``name``'s default budget; ``limit`` replaces its limit, in its own unit."""
    unit, default = DEFAULT_BUDGETS.get(name, ("candidate_evals", 3600))
    return BudgetSpec(unit=unit, limit=default if limit is None else limit)


@dataclass
class Run:
    """Everything one run needs, built and ready."""

    name: str
    config: object
    method: Method
    oracle: ClipOracle | PooledOracle
    objective: PromptObjective
    scorer: SplitScorer


def layout_of(config) -> PromptLayout:
    """The oracle's prompt layout from a method config (a methods.base.PromptConfig)."""
    return PromptLayout(n_text=config.n_text, n_visual=config.n_visual, deep=config.deep,
                        text_init=config.text_init, template=config.text_template,
                        precision=config.precision)


def build_run(name: str, params: dict | None, model: LoadedModel, task: FewShot,
              budget: BudgetSpec | None, seed: int) -> Run:
    """Method ``name`` with hyperparameters ``params`` on ``model`` and ``task``, seeded."""
    from sweep.oracle import ClipOracle

    registry = SWEEP_METHODS
    config = registry.make_config(name, params or {})
    method_cls = registry.entry(name).method_cls
    if budget is None:
        budget = default_budget(name)
    oracle = ClipOracle(model, task, layout_of(config), budget, glass_box=method_cls.needs_gradient)
    return assemble(name, config, oracle, seed)


def assemble(name: str, config, oracle, seed: int, method: Method | None = None) -> Run:
    """Objective, method and scorer of ``name`` on an oracle (local or pooled) built for ``config``;
    ``method``: one that has run already (from a checkpoint) instead of a fresh one."""
    objective = PromptObjective(oracle, config, seed)
    if method is None:
        method = SWEEP_METHODS.create(name, config, objective.space, seed)
    scorer = SplitScorer(objective.evaluate_split, oracle.zero_shot)
    return Run(name, config, method, oracle, objective, scorer)


def run_once(run: Run, checkpoints: int = 8, on_checkpoint=None) -> RunResult:
    """Run to the budget, seeding torch for methods that draw from it."""
    import torch

    torch.manual_seed(run.method.seed)
    np.random.seed(run.method.seed % 2**32)
    return run_method(run.method, run.objective, run.scorer, checkpoints, on_checkpoint)
