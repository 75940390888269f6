"""Objectives a method is run against: the prompt objective on an oracle, and analytic ones.

An objective maps a batch of search points z (n, dim) to an Evaluation and
owns the query accounting (``used``, ``fits``): the loop never trusts a
method to count. ``PromptObjective`` goes z -> prompts (the method's
parametrisation) -> oracle. ``QuadraticObjective`` and ``SyntheticClipObjective``
are analytic stand-ins, counted in the same units as the oracle, so that every
method runs in milliseconds in the conformance tests.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

from methods.base import Evaluation, PromptConfig
from methods.subspace import ModelStats, Parametrisation
from sweep.budget import BudgetSpec, QueryCounts
from sweep.errors import ConfigError, PromptTuningError
from sweep.oracle import ClipOracle

__all__ = [
    "NonFiniteLossError", "Objective", "PromptObjective", "QuadraticObjective",
    "SyntheticClipObjective", "rank_nonfinite_worst",
]


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
    budget: BudgetSpec
    used: QueryCounts

    def cost(self, candidates: int, minibatch: int | None) -> QueryCounts: ...

    def __call__(self, z: np.ndarray, *, minibatch: int | None = None, features: bool = False,
                 gradient: bool = False) -> Evaluation: ...


def fits(objective: Objective, candidates: int, minibatch: int | None) -> bool:
    """Whether a request of ``candidates`` stays within the objective's budget."""
    limit = objective.budget.limit
    if limit is None:
        return True
    unit = objective.budget.unit
    return objective.used[unit] + objective.cost(candidates, minibatch)[unit] <= limit


def _draw_subset(rng: np.random.Generator, total: int, minibatch: int | None) -> np.ndarray | None:
    if minibatch is None or minibatch >= total:
        return None
    return np.sort(rng.choice(total, size=minibatch, replace=False))


class PromptObjective:
    """z -> prompts -> oracle. Mini-batches are drawn from a generator seeded by ``seed``.

    Args:
        oracle: the (local or pooled) oracle whose layout matches ``config``.
        config: the method's PromptConfig (layout and subspace settings).
        seed: seeds the projection matrices and the mini-batch draws.
    """

    def __init__(self, oracle: ClipOracle, config: PromptConfig, seed: int) -> None:
        self.oracle = oracle
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
        #: losses replaced by ``rank_nonfinite_worst`` so far (recorded on the trial row).
        self.nonfinite_losses = 0

    @property
    def space(self):
        return self.parametrisation.space

    @property
    def budget(self) -> BudgetSpec:
        return self.oracle.budget

    @property
    def used(self) -> QueryCounts:
        return self.oracle.used

    def cost(self, candidates: int, minibatch: int | None) -> QueryCounts:
        m = self.oracle.train_size
        return self.oracle.cost(candidates, m if minibatch is None else min(minibatch, m))

    def __call__(self, z: np.ndarray, *, minibatch: int | None = None, features: bool = False,
                 gradient: bool = False) -> Evaluation:
        text, visual = self.parametrisation.prompts(np.asarray(z, dtype=np.float64))
        subset = _draw_subset(self._rng, self.oracle.train_size, minibatch)
        if gradient:
            losses, g_text, g_visual = self.oracle.gradient(text=text, visual=visual, subset=subset)
            ev = Evaluation(losses=losses, gradients=self.parametrisation.pullback(g_text, g_visual))
        else:
            ev = self.oracle.evaluate(text=text, visual=visual, features=features, subset=subset)
        ev, replaced = rank_nonfinite_worst(ev)
        self.nonfinite_losses += replaced
        return ev

    def evaluate_split(self, split: str, z: np.ndarray, features: bool = False) -> Evaluation:
        """The evaluation channel (never counted against the budget)."""
        text, visual = self.parametrisation.prompts(np.asarray(z, dtype=np.float64).reshape(1, -1))
        return self.oracle.evaluate_split(split, text=text, visual=visual, features=features)


class _Counted:
    """Query accounting shared by the analytic objectives: as if on m images of C classes."""

    def __init__(self, budget: BudgetSpec, images: int, classes: int) -> None:
        self.budget = budget
        self.images = images
        self.classes = classes
        self.used = QueryCounts()

    def cost(self, candidates: int, minibatch: int | None) -> QueryCounts:
        m = self.images if minibatch is None else min(minibatch, self.images)
        return QueryCounts.of_request(candidates, m, self.classes, self.budget.batch_size)

    def _charge(self, z: np.ndarray, minibatch: int | None) -> np.ndarray:
        z = np.asarray(z, dtype=np.float64)
        if z.ndim != 2:
            raise ConfigError(f"an objective takes z of shape (n, dim); got {z.shape}")
        cost = self.cost(z.shape[0], minibatch)
        self.budget.check(self.used, cost)
        self.used = self.used + cost
        return z


class QuadraticObjective(_Counted):
    """f(z) = 0.5 (z - z*)^T diag(h) (z - z*), h log-uniform in [1, cond]; minimum 0 at z*."""

    def __init__(self, dim: int, budget: BudgetSpec | None = None, seed: int = 0,
                 cond: float = 10.0, images: int = 160, classes: int = 10) -> None:
        super().__init__(budget or BudgetSpec(), images, classes)
        rng = np.random.default_rng(seed)
        self.dim = dim
        self.h = np.exp(rng.uniform(0, np.log(cond), size=dim))
        self.z_star = rng.normal(size=dim) / np.sqrt(dim)

    def value(self, z: np.ndarray) -> np.ndarray:
        d = np.atleast_2d(z) - self.z_star
        return 0.5 * np.einsum("ni,i,ni->n", d, self.h, d)

    def __call__(self, z: np.ndarray, *, minibatch: int | None = None, features: bool = False,
                 gradient: bool = False) -> Evaluation:
        z = self._charge(z, minibatch)
        if features:
            raise ConfigError("the quadratic objective has no features")
        grads = (z - self.z_star) * self.h if gradient else None
        return Evaluation(losses=self.value(z), gradients=grads)


class SyntheticClipObjective(_Counted):
    """A CLIP-shaped analytic objective with features, for adapter methods.

    Image features are fixed noisy class clusters on the unit sphere; the text
    feature of class c under z is normalize(t_c + B_c z) with fixed slightly
    wrong anchors t_c. The loss is CLIP's cross-entropy with logit scale 20.
    """

    def __init__(self, dim: int, budget: BudgetSpec | None = None, seed: int = 0,
                 classes: int = 5, per_class: int = 16, width: int = 16) -> None:
        super().__init__(budget or BudgetSpec(), classes * per_class, classes)
        rng = np.random.default_rng(seed)
        self.dim = dim
        centres = _unit(rng.normal(size=(classes, width)))
        self.labels = np.repeat(np.arange(classes), per_class)
        self.image_features = _unit(centres[self.labels] + 0.6 * rng.normal(size=(len(self.labels), width)))
        self.anchors = _unit(centres + 1.2 * rng.normal(size=(classes, width)))
        self.maps = rng.normal(size=(classes, width, dim)) / np.sqrt(dim)
        self.logit_scale = 20.0
        self._rng = np.random.default_rng([seed, 1])

    def text_features(self, z: np.ndarray) -> np.ndarray:
        return _unit(self.anchors[None] + np.einsum("cwd,nd->ncw", self.maps, z))

    def __call__(self, z: np.ndarray, *, minibatch: int | None = None, features: bool = False,
                 gradient: bool = False) -> Evaluation:
        z = self._charge(z, minibatch)
        if gradient:
            raise ConfigError("the synthetic CLIP objective has no gradients")
        idx = _draw_subset(self._rng, len(self.labels), minibatch)
        idx = np.arange(len(self.labels)) if idx is None else idx
        txt = self.text_features(z)
        img = self.image_features[idx]
        logits = self.logit_scale * np.einsum("md,ncd->nmc", img, txt)
        logits -= logits.max(axis=-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
        labels = self.labels[idx]
        losses = -logp[:, np.arange(len(idx)), labels].mean(axis=1)
        acc = (logits.argmax(axis=-1) == labels).mean(axis=1)
        if not features:
            return Evaluation(losses=losses, accuracies=acc)
        return Evaluation(losses=losses, accuracies=acc, text_features=txt, image_features=img[None],
                          labels=labels, logit_scale=self.logit_scale)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)
