"""Central differences, x + s_i against x - s_i: antithetic Gaussian and coordinate blocks.

Both put the q plus points first and the q minus points after them, in the same
order, for 2q evaluations; SPSA (``methods.estimators.spsa``) shares the layout.
Conventions: ``methods.estimators.base``.
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np

from methods.errors import ConfigError
from methods.estimators.base import EstimatorConfig, GradientEstimator

__all__ = ["Antithetic", "CoordinateBlock", "TwoSided"]


class TwoSided(GradientEstimator):
    """Shared machinery of the central-difference estimators: plus points, then minus points.

    ``perturb`` returns [x + s_1..x + s_q; x - s_1..x - s_q] for the steps s_i of
    ``_steps``; ``combine`` gets them back through ``_differences``.
    """

    @property
    def queries_per_step(self) -> int:
        return 2 * self.config.q

    @abstractmethod
    def _steps(self, rng: np.random.Generator) -> np.ndarray:
        """(q, dim) steps s_i."""

    def perturb(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = self._vector(x)
        step = self._steps(rng)
        return np.vstack([x + step, x - step])

    def _differences(self, x: np.ndarray, points: np.ndarray, losses: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Validated (q, dim) spans plus_i - minus_i = 2 s_i and (q,) f(plus_i) - f(minus_i)."""
        _, points, losses = self._batch(x, points, losses)
        q = self.config.q
        return points[:q] - points[q:], losses[:q] - losses[q:]


class Antithetic(TwoSided):
    """Antithetic Gaussian estimator, NES / OpenAI-ES (Salimans et al. 2017, arXiv 1703.03864,
    algorithm 2 with mirrored sampling; Wierstra et al., JMLR 2014).

    g = (1/(2 q mu)) sum_i [f(x + mu u_i) - f(x - mu u_i)] u_i,   u_i ~ N(0, I_d) i.i.d.

    Unbiased for grad f_mu (Gaussian smoothing, by Stein's lemma); the central difference is
    exact on quadratics, so there the only error is the sampling noise of the u_i.

    Cost: 2q evaluations (rows 0..q-1: x + mu u_i; rows q..2q-1: x - mu u_i). MeZO
    (arXiv 2305.17333) is q = 1.
    Config: ``q``; ``mu`` (default 1e-3, MeZO; OpenAI-ES uses 0.02).
    """

    name = "antithetic"
    unbiased = True

    def __init__(self, config: EstimatorConfig, dim: int) -> None:
        super().__init__(config, dim)
        self.mu = self._radius(1e-3)

    def _steps(self, rng: np.random.Generator) -> np.ndarray:
        return self.mu * rng.standard_normal((self.config.q, self.dim))

    def combine(self, x: np.ndarray, points: np.ndarray, losses: np.ndarray) -> np.ndarray:
        # spans 2 mu u_i; diffs f(x + mu u_i) - f(x - mu u_i)
        spans, diffs = self._differences(x, points, losses)
        steps = 0.5 * spans                                      # mu u_i
        # g = 1/(2 q mu) sum_i diff_i u_i, u_i = steps_i / mu
        return (diffs @ steps) / (2.0 * self.config.q * self.mu * self.mu)


class CoordinateBlock(TwoSided):
    """Coordinate-wise central differences on a random block, ZOO (Chen et al., AISec 2017,
    "ZOO: zeroth order optimization based black-box attacks").

    A block S of q coordinates is drawn uniformly without replacement each estimate, and

        g_i = (d/q) [f(x + h e_i) - f(x - h e_i)] / (2h)   for i in S,   g_i = 0 otherwise.

    Choice: the d/q factor is included, so E[g] is the full central-difference gradient (equal
    to grad f on a quadratic) and the scale matches the other estimators; ZOO's own
    coordinate update uses the unscaled differences (multiply by q/d to get them).
    Biased in general (O(h^2) per coordinate).

    Cost: 2q evaluations (rows 0..q-1: x + h e_i; rows q..2q-1: x - h e_i); q <= d.
    Config: ``q`` = block size (ZOO uses 128); ``mu`` = h (default 1e-4, ZOO).
    """

    name = "coordinate"
    unbiased = False

    def __init__(self, config: EstimatorConfig, dim: int) -> None:
        super().__init__(config, dim)
        if config.q > self.dim:
            raise ConfigError(
                f"estimator {self.name}: the block size q={config.q} exceeds dim={self.dim}"
            )
        self.h = self._radius(1e-4)

    def _steps(self, rng: np.random.Generator) -> np.ndarray:
        q = self.config.q
        block = rng.choice(self.dim, size=q, replace=False)
        step = np.zeros((q, self.dim))
        step[np.arange(q), block] = self.h
        return step

    def combine(self, x: np.ndarray, points: np.ndarray, losses: np.ndarray) -> np.ndarray:
        # spans 2h e_i; diffs f(x + h e_i) - f(x - h e_i)
        spans, diffs = self._differences(x, points, losses)
        q = self.config.q
        sq = np.einsum("ij,ij->i", spans, spans)                 # (2h)^2
        # sum_i diff_i * spans_i / |spans_i|^2 = sum_i diff_i / (2h) e_i
        weights = np.divide(diffs, sq, out=np.zeros_like(diffs), where=sq > 0)
        return (self.dim / q) * (weights @ spans)
