"""Analytic stand-ins for the prompt objective: every method runs against them in milliseconds.

``QuadraticObjective`` and ``SyntheticClipObjective`` take search points z and
return Evaluations as ``sweep.run.PromptObjective`` does, counted by the same
``QueryMeter`` as if each request were on m images of C classes, so the
conformance tests check every method's budget and determinism without a model.
"""

from __future__ import annotations

import numpy as np

from methods.base import Evaluation
from sweep.budget import BudgetSpec, Metered, QueryMeter
from sweep.errors import ConfigError
from sweep.run import draw_minibatch

__all__ = ["QuadraticObjective", "SyntheticClipObjective"]


class _Counted(Metered):
    """Query accounting shared by the analytic objectives: as if on m images of C classes."""

    def __init__(self, budget: BudgetSpec | None, images: int, classes: int) -> None:
        self.meter = QueryMeter(budget, images, classes)

    def dev(self, z: np.ndarray) -> Evaluation:
        """A method's own selection draw (``FewShot.dev``): counted in the budget as one
        candidate per point on a quarter of the images (min(K, 4) of K = 16 a class)."""
        z = np.asarray(z, dtype=np.float64)
        self.meter.charge(self.meter.cost(z.shape[0], max(1, self.meter.images // 4)))
        return self._dev_scores(z)

    def _dev_scores(self, z: np.ndarray) -> Evaluation:
        raise ConfigError(f"{type(self).__name__} has no dev draw")

    def _charge(self, z: np.ndarray, minibatch: int | None) -> np.ndarray:
        z = np.asarray(z, dtype=np.float64)
        if z.ndim != 2:
            raise ConfigError(f"an objective takes z of shape (n, dim); got {z.shape}")
        self.meter.charge(self.cost(z.shape[0], minibatch))
        return z


class QuadraticObjective(_Counted):
    """f(z) = 0.5 (z - z*)^T diag(h) (z - z*), h log-uniform in [1, cond]; minimum 0 at z*."""

    def __init__(self, dim: int, budget: BudgetSpec | None = None, seed: int = 0,
                 cond: float = 10.0, images: int = 160, classes: int = 10) -> None:
        super().__init__(budget, images, classes)
        rng = np.random.default_rng(seed)
        self.dim = dim
        self.h = np.exp(rng.uniform(0, np.log(cond), size=dim))
        self.z_star = rng.normal(size=dim) / np.sqrt(dim)

    def value(self, z: np.ndarray) -> np.ndarray:
        d = np.atleast_2d(z) - self.z_star
        return 0.5 * np.einsum("ni,i,ni->n", d, self.h, d)

    def _dev_scores(self, z: np.ndarray) -> Evaluation:
        loss = self.value(z)
        return Evaluation(losses=loss, accuracies=1.0 / (1.0 + loss))  # falls as the loss grows

    def __call__(self, z: np.ndarray, *, minibatch: int | None = None, features: bool = False,
                 gradient: bool = False, fresh_views: bool = False) -> Evaluation:
        del fresh_views  # no images, no views
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
        super().__init__(budget, classes * per_class, classes)
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
                 gradient: bool = False, fresh_views: bool = False) -> Evaluation:
        del fresh_views  # fixed features: no views
        z = self._charge(z, minibatch)
        if gradient:
            raise ConfigError("the synthetic CLIP objective has no gradients")
        idx = draw_minibatch(self._rng, len(self.labels), minibatch)
        return self._scores(z, np.arange(len(self.labels)) if idx is None else idx, features)

    def _dev_scores(self, z: np.ndarray) -> Evaluation:
        return self._scores(z, np.arange(len(self.labels)), False)

    def _scores(self, z: np.ndarray, idx: np.ndarray, features: bool) -> Evaluation:
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
