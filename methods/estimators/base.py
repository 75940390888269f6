"""The estimator interface and what all estimators share: config, checks, unit directions.

An estimator turns points and their losses into a gradient vector; it never
touches a model. One estimate is::

    points = est.perturb(x, rng)              # (est.queries_per_step, dim), evaluated together
    g = est.combine(x, points, losses)        # (dim,)

All points of one estimate are evaluated in one request, on one mini-batch
(common random numbers). Formulas: ../shared/reference/METHODS.md section 9.

Conventions shared by every estimator (``methods.estimators``):

- All randomness comes from the ``rng`` passed to ``perturb``; nothing reads
  the global numpy RNG, so an estimate is a function of (x, rng state,
  estimator state, losses).
- ``combine`` recovers the perturbations from ``points - x`` (or from the
  difference of the plus and minus points), so it needs nothing remembered
  from ``perturb``: the finite differences use exactly the displacements that
  were evaluated. ``x`` must be the same vector that was given to ``perturb``.
- Layouts of ``points``: one-sided estimators put the centre x first, then
  the q perturbed points; two-sided ones put the q plus points first, then
  the q minus points in the same order.
- Estimates are float64; state dicts hold only ints, floats, bools, lists of
  floats and None, so they pickle (and serialise) as plain data.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from methods.errors import ConfigError

__all__ = ["EstimatorConfig", "GradientEstimator", "sphere", "unit_rows"]


@dataclass(frozen=True, kw_only=True)
class EstimatorConfig:
    """Settings shared by all estimators; each uses the ones it names in its docstring."""

    #: number of directions per estimate.
    q: int = 16
    #: smoothing radius (mu, beta, epsilon, c or h in the papers); None: the estimator's default.
    mu: float | None = None
    #: SPSA decay exponent of the radius, c_k = c / k**gamma; None: the estimator's default
    #: (spsa 0.101, Spall's standard value; spsa_gc 0.2, BlackVIP's default; ZIP uses 0.1).
    gamma: float | None = None
    #: SPSA-GC momentum beta in m_k = beta m_{k-1} + g_k (BlackVIP: 0.9; 0.3-0.95 on some sets).
    momentum: float = 0.9
    #: SPSA perturbation law: "rademacher" (D_j = +-1) or "segmented" (|D_j| ~ U[0.5, 1) with a
    #: random sign, BlackVIP's code); None: the estimator's default (spsa: rademacher,
    #: spsa_gc: segmented).
    spsa_distribution: str | None = None


class GradientEstimator(ABC):
    """Base class: ``perturb`` proposes points around x, ``combine`` turns their losses into a gradient."""

    name: ClassVar[str] = ""
    #: True when E[combine] equals the gradient of a smoothed f (checked in the tests).
    unbiased: ClassVar[bool] = False

    def __init__(self, config: EstimatorConfig, dim: int) -> None:
        if config.q < 1:
            raise ConfigError(f"estimator {self.name}: q must be >= 1; got {config.q}")
        self.config = config
        self.dim = int(dim)
        if self.dim < 1:
            raise ConfigError(f"estimator {self.name}: dim must be >= 1; got {dim}")

    @property
    @abstractmethod
    def queries_per_step(self) -> int:
        """Rows of perturb(): losses needed per estimate."""

    @abstractmethod
    def perturb(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(queries_per_step, dim) points to evaluate for an estimate at x."""

    @abstractmethod
    def combine(self, x: np.ndarray, points: np.ndarray, losses: np.ndarray) -> np.ndarray:
        """(dim,) gradient estimate from the losses of the points of the last perturb()."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state

    # ----------------------------------------------------------------- helpers

    def _radius(self, default: float) -> float:
        """config.mu, or ``default`` when it is None; must be finite and > 0."""
        mu = default if self.config.mu is None else self.config.mu
        if not (isinstance(mu, (int, float)) and math.isfinite(mu) and mu > 0):
            raise ConfigError(f"estimator {self.name}: mu must be a finite number > 0; got {mu!r}")
        return float(mu)

    def _vector(self, x: np.ndarray) -> np.ndarray:
        """x as a float64 (dim,) vector."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self.dim,):
            raise ConfigError(
                f"estimator {self.name}: x must have shape ({self.dim},); got {x.shape}"
            )
        return x

    def _batch(self, x: np.ndarray, points: np.ndarray, losses: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Validated float64 x (dim,), points (n, dim) and losses (n,), n = queries_per_step."""
        x = self._vector(x)
        n = self.queries_per_step
        points = np.asarray(points, dtype=np.float64)
        losses = np.asarray(losses, dtype=np.float64).reshape(-1)
        if points.shape != (n, self.dim):
            raise ConfigError(
                f"estimator {self.name}: points must have shape ({n}, {self.dim}); "
                f"got {points.shape}"
            )
        if losses.shape != (n,):
            raise ConfigError(f"estimator {self.name}: expected {n} losses; got {losses.shape[0]}")
        return x, points, losses


def unit_rows(a: np.ndarray) -> np.ndarray:
    """Rows of ``a`` scaled to unit Euclidean norm (a zero row stays zero)."""
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.where(norms > 0, norms, 1.0)


def sphere(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """(n, dim) independent directions uniform on the unit sphere S^(dim-1)."""
    return unit_rows(rng.standard_normal((n, dim)))
