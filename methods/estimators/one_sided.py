"""Forward differences around the centre x: Gaussian, sphere and orthogonal directions.

g = (scale / q) sum_i [(f(x + mu u_i) - f(x)) / mu] u_i, from q + 1 evaluations
(the centre x is row 0 of ``perturb``); the three differ only in how the u_i
are drawn. Conventions: ``methods.estimators.base``.
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np

from methods.estimators.base import EstimatorConfig, GradientEstimator, sphere

__all__ = ["GaussianSmoothing", "OneSided", "OrthogonalGaussian", "SphereRGE"]


def _orthogonal_gaussian(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """(n, dim) directions, jointly orthogonal within blocks of at most ``dim`` rows.

    Each block is Q of the QR factorisation of a Gaussian (dim, b) matrix, with
    the signs fixed by diag(R) > 0 so that Q is Haar-distributed on the Stiefel
    manifold; row i is then scaled by an independent chi(dim) norm, so every row
    is marginally N(0, I) (Choromanski et al., ICML 2018, "Structured evolution
    with compact architectures for scalable policy optimization").
    Blocks are independent of each other when n > dim.
    """
    blocks = []
    left = n
    while left > 0:
        b = min(dim, left)
        q_mat, r_mat = np.linalg.qr(rng.standard_normal((dim, b)))
        signs = np.sign(np.diag(r_mat))
        q_mat = q_mat * np.where(signs == 0, 1.0, signs)
        norms = np.sqrt(rng.chisquare(dim, size=b))
        blocks.append((q_mat * norms).T)
        left -= b
    return np.vstack(blocks)


class OneSided(GradientEstimator):
    """Shared machinery of the forward-difference estimators with the centre as row 0.

    g = (scale / q) sum_i [(f(x + mu u_i) - f(x)) / mu] u_i, u_i = (points[i+1] - x) / mu.
    """

    def __init__(self, config: EstimatorConfig, dim: int) -> None:
        super().__init__(config, dim)
        self.mu = self._radius(self._default_mu())

    def _default_mu(self) -> float:
        return 1e-3

    def _scale(self) -> float:
        """The factor in front of the average (1 for Gaussian directions, d for unit ones)."""
        return 1.0

    @property
    def queries_per_step(self) -> int:
        return self.config.q + 1

    @abstractmethod
    def _directions(self, rng: np.random.Generator) -> np.ndarray:
        """(q, dim) directions u_i."""

    def perturb(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = self._vector(x)
        u = self._directions(rng)
        return np.vstack([x[None, :], x[None, :] + self.mu * u])

    def combine(self, x: np.ndarray, points: np.ndarray, losses: np.ndarray) -> np.ndarray:
        x, points, losses = self._batch(x, points, losses)
        q = self.config.q
        steps = points[1:] - x                                  # mu u_i
        slopes = (losses[1:] - losses[0]) / self.mu             # (f(x + mu u_i) - f(x)) / mu
        # g = (scale/q) sum_i slope_i u_i, with u_i = steps_i / mu.
        return (self._scale() / (q * self.mu)) * (slopes @ steps)


class GaussianSmoothing(OneSided):
    """Gaussian smoothing, one-sided (Nesterov & Spokoiny 2017, "Random gradient-free
    minimization of convex functions", FoCM).

    g = (1/q) sum_i [(f(x + mu u_i) - f(x)) / mu] u_i,   u_i ~ N(0, I_d) i.i.d.

    Unbiased for grad f_mu with f_mu(x) = E_u f(x + mu u) (Gaussian smoothing); for a
    quadratic f_mu and f differ by a constant, so E[g] = grad f exactly.

    Cost: q + 1 evaluations (the centre x is row 0 of ``perturb``).
    Config: ``q``; ``mu`` (default 1e-3, MeZO's epsilon, arXiv 2305.17333; OpenAI-ES uses
    sigma 0.02 with antithetic pairs).
    """

    name = "gaussian"
    unbiased = True

    def _directions(self, rng: np.random.Generator) -> np.ndarray:
        return rng.standard_normal((self.config.q, self.dim))


class SphereRGE(OneSided):
    """Random gradient estimate on the unit sphere (BAR: Tsai et al., ICML 2020; CBBT: Guo et
    al., Findings of EMNLP 2023, trainers/cooppara.py).

    g = (d/q) sum_i [(f(x + mu u_i) - f(x)) / mu] u_i,   u_i uniform on S^(d-1) i.i.d.

    Unbiased for the gradient of the ball-smoothed function f^B_mu(x) = E_{v ~ U(B^d)} f(x + mu v)
    (Flaxman, Kalai & McMahan 2005, lemma 1), hence for grad f on a quadratic; for a general f
    it is O(mu) away from grad f.

    Cost: q + 1 evaluations (the centre is row 0).
    Config: ``q``; ``mu`` (default CBBT's epsilon = max(1/d, 0.001); BAR uses 0.01).

    Note on CBBT's code: it computes (1/eps) (1/q) sum_i [(f(x + eps u_i) - f(x)) / eps] u_i,
    i.e. the dimension factor d of the RGE is replaced by 1/eps = min(d, 1000). That equals d
    only while d <= 1000 and ties the gradient's scale to the radius. We implement the evident
    intent, the factor d independent of mu; for d > 1000 CBBT's literal estimate is (1000/d)
    times ours (a learning-rate rescale, same direction).
    """

    name = "sphere"
    unbiased = True

    def _default_mu(self) -> float:
        return max(1.0 / self.dim, 1e-3)

    def _scale(self) -> float:
        return float(self.dim)

    def _directions(self, rng: np.random.Generator) -> np.ndarray:
        return sphere(rng, self.config.q, self.dim)


class OrthogonalGaussian(OneSided):
    """Orthogonal Gaussian directions, one-sided (Choromanski, Rowland, Sindhwani, Turner &
    Weller, ICML 2018, "Structured evolution with compact architectures ...").

    g = (1/q) sum_i [(f(x + mu u_i) - f(x)) / mu] u_i,   u_1..u_q jointly orthogonal,

    u_i = r_i Q_i with Q the Haar-random orthonormal columns of the QR factorisation of a
    Gaussian (d, q) matrix and r_i ~ chi(d) independent: each u_i is marginally N(0, I), so the
    estimator stays unbiased for grad f_mu (Gaussian smoothing) like ``gaussian``, with lower
    variance (for f linear and q = d: E|g - grad f|^2 = 2|grad f|^2/d instead of (d+1)|grad f|^2/q).
    For q > d the directions come in independent orthogonal blocks of d (the last one smaller).

    Cost: q + 1 evaluations (the centre is row 0).
    Config: ``q``; ``mu`` (default 1e-3, as ``gaussian``).
    """

    name = "orthogonal"
    unbiased = True

    def _directions(self, rng: np.random.Generator) -> np.ndarray:
        return _orthogonal_gaussian(rng, self.config.q, self.dim)
