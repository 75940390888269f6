"""The objective a method is run against: z -> prompts -> oracle, and the non-finite-loss policy.

An objective maps a batch of search points z (n, dim) to an Evaluation and
shows its oracle's query meter (``meter``, ``used``, ``cost``): the loop never
trusts a method to count. ``PromptObjective`` goes z -> prompts (the method's
parametrisation) -> oracle. Analytic stand-ins with the same interface, for
tests, are in ``sweep.testing``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from methods.base import Evaluation, PromptConfig
from methods.subspace import ModelStats, Parametrisation
from sweep.budget import BudgetSpec, Metered, QueryCounts, QueryMeter
from sweep.errors import PromptTuningError
from sweep.run.views import RECIPES

if TYPE_CHECKING:
    from sweep.oracle import ClipOracle, PooledOracle

__all__ = ["EpochBatches", "NonFiniteLossError", "Objective", "PromptObjective", "draw_minibatch",
           "rank_nonfinite_worst"]


class NonFiniteLossError(PromptTuningError, FloatingPointError):
    """Every candidate of a request had a non-finite loss: nothing to rank them by."""


def rank_nonfinite_worst(evaluation: Evaluation) -> tuple[Evaluation, int]:
    """The non-finite-loss policy: such a candidate counts as the worst of its request.

    Its loss becomes the largest finite loss of the same request (so ranking
    methods place it last and difference estimators see no jump to infinity);
    its query has been counted all the same. Returns the evaluation and how
    many losses were replaced. A request with no finite loss at all raises
    NonFiniteLossError: the oracle is broken, and the trial fails.
    """
    losses = np.asarray(evaluation.losses, dtype=np.float64)
    bad = ~np.isfinite(losses)
    if not bad.any():
        return evaluation, 0
    if bad.all():
        raise NonFiniteLossError(f"all {len(losses)} losses of a request are non-finite")
    fixed = losses.copy()
    fixed[bad] = losses[~bad].max()
    return dataclasses.replace(evaluation, losses=fixed), int(bad.sum())


class Objective(Protocol):
    """What the loop runs a method against (``Metered`` gives all but ``__call__``)."""

    meter: QueryMeter
    budget: BudgetSpec
    used: QueryCounts

    def cost(self, candidates: int, minibatch: int | None = None) -> QueryCounts: ...

    def __call__(self, z: np.ndarray, *, minibatch: int | None = None, features: bool = False,
                 gradient: bool = False, fresh_views: bool = False) -> Evaluation: ...

    def dev(self, z: np.ndarray) -> Evaluation: ...


def draw_minibatch(rng: np.random.Generator, total: int, minibatch: int | None) -> np.ndarray | None:
    """Sorted indices of ``minibatch`` of ``total`` images, drawn without replacement (None: all)."""
    if minibatch is None or minibatch >= total:
        return None
    return np.sort(rng.choice(total, size=minibatch, replace=False))


class EpochBatches:
    """Mini-batches as Dassl's loader makes them: a fresh permutation of the training set
    each epoch, cut into consecutive batches, the last partial one dropped (``drop_last``).

    Example:
        >>> batches = EpochBatches(np.random.default_rng(0))
        >>> epoch = [batches.next(10, 4) for _ in range(2)]  # 10 // 4 = 2 batches an epoch
        >>> len(set(np.concatenate(epoch))), batches.next(10, 4) is not None, batches.next(3, 4)
        (8, True, None)
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.order: np.ndarray | None = None  # this epoch's permutation
        self.position = 0

    def next(self, total: int, minibatch: int | None) -> np.ndarray | None:
        """The next batch's sorted indices (None: the whole set, as a batch not smaller)."""
        if minibatch is None or minibatch >= total:
            return None
        if self.order is None or len(self.order) != total or \
                self.position + minibatch > total:  # a new epoch
            self.order, self.position = self.rng.permutation(total), 0
        batch = self.order[self.position:self.position + minibatch]
        self.position += minibatch
        return np.sort(batch)

    def state(self) -> dict[str, Any]:
        return {"order": None if self.order is None else self.order.copy(),
                "position": self.position}

    def restore(self, state: dict[str, Any]) -> None:
        self.order = None if state["order"] is None else np.array(state["order"])
        self.position = int(state["position"])


class PromptObjective(Metered):
    """z -> prompts -> oracle. Mini-batches are drawn from a generator seeded by ``seed``.

    Args:
        oracle: the (local or pooled) oracle whose layout matches ``config``.
        config: the method's PromptConfig (layout and subspace settings).
        seed: seeds the projection matrices and the mini-batch draws.
    """

    def __init__(self, oracle: ClipOracle | PooledOracle, config: PromptConfig, seed: int) -> None:
        self.oracle = oracle
        self.meter = oracle.meter
        self.parametrisation = Parametrisation(
            config,
            oracle.text_shape if config.n_text else None,
            oracle.visual_shape if config.n_visual else None,
            ModelStats(**oracle.model_stats()),
            seed,
            text_init=oracle.initial_text() if config.n_text else None,
            visual_init=oracle.initial_visual() if config.n_visual else None,
        )
        self._rng = np.random.default_rng([seed, 0x6D62])  # mini-batch stream, apart from the matrices
        # Per-epoch permutations (Dassl), or a draw of its own per request (v1). Configs
        # without mini-batches (the ES methods) never ask for one: either is the same.
        self._epochs = EpochBatches(self._rng) if getattr(
            config, "minibatches", "independent") == "epoch" else None
        # Augmented views of each training request's images (``sweep.run.views``): a stream
        # of their own, so that augmentation off leaves the mini-batches exactly as they were.
        self._views = np.random.default_rng([seed, 0x7669]) if getattr(
            config, "augment", False) else None
        self._draw_views = RECIPES[getattr(config, "views", "crop_flip")]
        # With ``fixed_views``, each training image's one view for the run, drawn at the first
        # request that shows it (the releases' features of one augmented pass).
        self._fix_views = self._views is not None and getattr(config, "fixed_views", False)
        self._fixed: np.ndarray | None = None
        #: losses replaced by ``rank_nonfinite_worst`` so far (recorded on the trial row).
        self.nonfinite_losses = 0

    @property
    def space(self):
        return self.parametrisation.space

    def state(self) -> dict[str, Any]:
        """What a budget checkpoint keeps of the objective (the projections follow from the seed)."""
        return {"used": self.meter.used, "eval_used": self.meter.eval_used,
                "minibatches": self._rng.bit_generator.state,
                "epoch": None if self._epochs is None else self._epochs.state(),
                "views": None if self._views is None else self._views.bit_generator.state,
                "fixed_views": None if self._fixed is None else self._fixed.copy(),
                "nonfinite_losses": self.nonfinite_losses}

    def restore(self, state: dict[str, Any]) -> None:
        """Go on from ``state()``: the query counts and the mini-batch stream where they were."""
        self.meter.used, self.meter.eval_used = state["used"], state["eval_used"]
        self._rng.bit_generator.state = state["minibatches"]
        if self._epochs is not None:
            self._epochs.restore(state["epoch"])
        if self._views is not None:
            self._views.bit_generator.state = state["views"]
        fixed = state.get("fixed_views")  # absent from checkpoints before fixed views
        self._fixed = None if fixed is None else np.array(fixed)
        self.nonfinite_losses = state["nonfinite_losses"]

    def __call__(self, z: np.ndarray, *, minibatch: int | None = None, features: bool = False,
                 gradient: bool = False, fresh_views: bool = False) -> Evaluation:
        """Evaluate the points z on the training set (or a mini-batch of it); counted.

        ``fresh_views``: with ``fixed_views``, this request's images show views drawn for it
        alone (``Method.fresh_views``); without ``fixed_views`` every request's are.
        """
        text, visual = self.parametrisation.prompts(np.asarray(z, dtype=np.float64))
        total = self.oracle.train_size
        subset = (draw_minibatch(self._rng, total, minibatch) if self._epochs is None
                  else self._epochs.next(total, minibatch))
        extra = {} if self._views is None else {"views": self._request_views(total, subset,
                                                                             fresh_views)}
        if gradient:
            losses, g_text, g_visual = self.oracle.gradient(text=text, visual=visual, subset=subset,
                                                            **extra)
            ev = Evaluation(losses=losses, gradients=self.parametrisation.pullback(g_text, g_visual))
        else:
            ev = self.oracle.evaluate(text=text, visual=visual, features=features, subset=subset,
                                      **extra)
            if features:  # which images the features are of: the objective drew them
                ev = dataclasses.replace(ev, indices=np.arange(total) if subset is None else subset)
        ev, replaced = rank_nonfinite_worst(ev)
        self.nonfinite_losses += replaced
        return ev

    def _request_views(self, total: int, subset: np.ndarray | None, fresh: bool) -> np.ndarray:
        """The views of a training request's images: the run's fixed ones (drawn once, for
        all ``total`` images, at the first request that needs them), else a fresh draw."""
        if not self._fix_views or fresh:
            return self._draw_views(self._views, total if subset is None else len(subset))
        if self._fixed is None:
            self._fixed = self._draw_views(self._views, total)
        return self._fixed if subset is None else self._fixed[subset]

    def dev(self, z: np.ndarray) -> Evaluation:
        """Score points on the task's dev draw (``FewShot.dev``), a method's own selection set
        (BBT's): counted in the budget like a training request; never the validation channel."""
        text, visual = self.parametrisation.prompts(np.asarray(z, dtype=np.float64))
        return self.oracle.evaluate_split("dev", text=text, visual=visual)

    def evaluate_split(self, split: str, z: np.ndarray, features: bool = False) -> Evaluation:
        """The evaluation channel (never counted against the budget)."""
        text, visual = self.parametrisation.prompts(np.asarray(z, dtype=np.float64).reshape(1, -1))
        return self.oracle.evaluate_split(split, text=text, visual=visual, features=features)
