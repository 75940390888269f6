"""PRGF: random directions mixed with a prior (the previous estimate, or a surrogate's gradient).

Forward differences around the centre x, as ``methods.estimators.one_sided``,
plus one query along the prior. Conventions: ``methods.estimators.base``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from methods.errors import ConfigError
from methods.estimators.base import EstimatorConfig, GradientEstimator, sphere, unit_rows

__all__ = ["PriorGuidedRGF", "prgf_lambda"]


def prgf_lambda(alpha: float, dim: int, q: int) -> float:
    """PRGF's optimal mixing weight lambda* (Cheng et al., NeurIPS 2019, arXiv 1906.06919:
    the closed form of the optimal lambda for q directions).

    With a = alpha^2 and D = d + 2q - 2:

    lambda* = 0                                           if a <= 1/D,
            = (1 - a)(a D - 1) / (2 a d q - a^2 d D - 1)  if 1/D < a < (2q - 1)/D,
            = 1                                           if a >= (2q - 1)/D.

    The middle expression is used when it lies in (0, 1), as in thu-ml/Prior-Guided-RGF
    attack.py; otherwise 0 or 1 by the first threshold, and 1 when |alpha| >= 1.
    """
    a2 = float(alpha) ** 2
    if a2 >= 1.0:
        return 1.0
    span = dim + 2 * q - 2
    num = (1.0 - a2) * (a2 * span - 1.0)
    den = 2.0 * a2 * dim * q - a2 * a2 * dim * span - 1.0
    if den != 0.0:
        lam = num / den
        if 0.0 < lam < 1.0:
            return float(lam)
    return 0.0 if a2 * span < 1.0 else 1.0


class PriorGuidedRGF(GradientEstimator):
    """Prior-guided random gradient-free estimator, PRGF (Cheng, Dong, Pang, Su & Zhu,
    NeurIPS 2019, "Improving black-box adversarial attacks with a transfer-based prior",
    arXiv 1906.06919; code thu-ml/Prior-Guided-RGF: attack.py).

    With v the normalised prior, w_i = normalize((I - v v^T) xi_i), xi_i ~ N(0, I):

        u_i = sqrt(lambda) v + sqrt(1 - lambda) w_i
        g_PRGF = (1/q) sum_i [(f(x + mu u_i) - f(x)) / mu] u_i

    with lambda = ``prgf_lambda(alpha, d, q)`` (the paper's optimal lambda) and the alignment
    alpha = v^T grad f / |grad f| estimated as the paper does:
    v^T grad f ~ (f(x + mu v) - f(x))/mu from one extra query along v, and |grad f| from the
    random directions: |grad f|^2 ~ (v^T grad f)^2 + ((d-1)/q) sum_i ((f(x + mu w_i) - f(x))/mu)^2
    (E[(w^T g)^2] = |(I - v v^T) g|^2 / (d - 1) for w uniform on the sphere of the complement).
    If the estimated v^T grad f < 0 the prior is flipped, as in the paper's code.

    One batch, one estimate: lambda depends on f(x + mu v), which is in the same batch, so the
    queried points are x, x + mu v and x + mu w_i, and the differences along u_i are assembled
    by linearity, (f(x + mu u_i) - f(x))/mu ~ sqrt(lambda) D_v + sqrt(1 - lambda) D_{w_i}. This
    is exactly PRGF when f is linear on the radius-mu ball and differs by O(mu) curvature terms
    otherwise (the order of any forward difference); in exchange lambda uses this step's alpha
    rather than a stale one, and |grad f| needs no extra queries (the paper spends 10 every 10
    iterations).

    Scale: PRGF defines a direction (the paper's attack normalises it). We return its best
    rescaling, the projection of grad f on g_PRGF: b g_PRGF with b = g_PRGF^T grad f / |g_PRGF|^2,
    where g_PRGF^T grad f = (1/q) sum_i D_{u_i} (u_i^T grad f) ~ (1/q) sum_i D_{u_i}^2 is known
    from the same differences; so |estimate| ~ |grad f| cos(angle) never exceeds |grad f|.

    Prior: by default the previous estimate (history prior); ``set_prior(v)`` installs an
    external prior (e.g. a surrogate model's gradient) that stays until replaced or cleared
    with ``set_prior(None)``; call it before ``perturb``. Fallback: with no prior yet (the
    first estimate, or after a zero estimate) the q + 1 non-centre points are plain sphere
    directions (the prior's slot becomes one more random direction, so the cost is constant)
    and the estimate is the same projection-scaled average, i.e. lambda = 0 with no v.

    Cost: q + 2 evaluations (rows: x, x + mu v, x + mu w_1..w_q). Biased (towards the prior).
    Config: ``q``; ``mu`` (default 1e-4 sqrt(d): the paper's sigma = 1e-4 is per coordinate,
    on directions of RMS 1, i.e. of norm sqrt(d)).
    State: ``prior`` (list or None) and ``external`` (bool). Diagnostics of the last
    estimate: ``last_alpha``, ``last_lambda`` (not state).
    """

    name = "prgf"
    unbiased = False

    def __init__(self, config: EstimatorConfig, dim: int) -> None:
        super().__init__(config, dim)
        if self.dim < 2:
            raise ConfigError(f"estimator {self.name}: needs dim >= 2; got {self.dim}")
        self.mu = self._radius(1e-4 * math.sqrt(self.dim))
        self.prior: np.ndarray | None = None
        self.external = False
        self.last_alpha: float | None = None
        self.last_lambda: float | None = None

    @property
    def queries_per_step(self) -> int:
        return self.config.q + 2

    def set_prior(self, v: np.ndarray | None) -> None:
        """Use ``v`` (any non-zero scale) as the prior from the next estimate on.

        Args:
            v: the prior, e.g. a surrogate gradient; None returns to the history prior.
        """
        if v is None:
            self.prior, self.external = None, False
            return
        v = self._vector(v)
        n = float(np.linalg.norm(v))
        if not (math.isfinite(n) and n > 0):
            raise ConfigError(f"estimator {self.name}: the prior must be finite and non-zero")
        self.prior, self.external = v / n, True

    def perturb(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = self._vector(x)
        q = self.config.q
        if self.prior is None:
            dirs = sphere(rng, q + 1, self.dim)                # fallback: plain sphere sampling
        else:
            v = self.prior / np.linalg.norm(self.prior)
            xi = rng.standard_normal((q, self.dim))
            w = unit_rows(xi - np.outer(xi @ v, v))            # normalize((I - v v^T) xi_i)
            dirs = np.vstack([v[None, :], w])
        return np.vstack([x[None, :], x[None, :] + self.mu * dirs])

    @staticmethod
    def _projected(dirs: np.ndarray, slopes: np.ndarray) -> np.ndarray:
        """b g with g = mean_i slope_i dir_i and b = mean_i slope_i^2 / |g|^2 (0 if g = 0)."""
        g = slopes @ dirs / len(slopes)
        n2 = float(g @ g)
        if not (n2 > 0 and math.isfinite(n2)):
            return np.zeros(dirs.shape[1])
        return (float(np.mean(slopes**2)) / n2) * g

    def combine(self, x: np.ndarray, points: np.ndarray, losses: np.ndarray) -> np.ndarray:
        x, points, losses = self._batch(x, points, losses)
        q, d = self.config.q, self.dim
        dirs = (points[1:] - x) / self.mu
        slopes = (losses[1:] - losses[0]) / self.mu            # D_u = (f(x + mu u) - f(x))/mu
        if self.prior is None:
            self.last_alpha, self.last_lambda = None, 0.0
            est = self._projected(dirs, slopes)
        else:
            v, w = dirs[0], dirs[1:]
            dv, dw = float(slopes[0]), slopes[1:]
            if dv < 0:                                          # flip so that alpha >= 0
                v, dv = -v, -dv
            norm2 = dv * dv + (d - 1) / q * float(dw @ dw)      # |grad f|^2 estimate
            alpha = dv / math.sqrt(norm2) if norm2 > 0 else 0.0
            lam = prgf_lambda(alpha, d, q)
            self.last_alpha, self.last_lambda = alpha, lam
            a, b = math.sqrt(lam), math.sqrt(1.0 - lam)
            u = a * v[None, :] + b * w                          # u_i (Cheng et al. 2019)
            du = a * dv + b * dw                                # D_{u_i} by linearity
            est = self._projected(u, du)
        if not self.external:
            n = float(np.linalg.norm(est))
            self.prior = est / n if n > 0 and math.isfinite(n) else None
        return est

    def state_dict(self) -> dict[str, Any]:
        return {
            "prior": None if self.prior is None else self.prior.tolist(),
            "external": bool(self.external),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            prior, external = state["prior"], bool(state["external"])
        except (KeyError, TypeError):
            raise ConfigError(
                f"estimator {self.name}: state needs 'prior' and 'external'"
            ) from None
        if prior is None:
            self.prior = None
        else:
            p = np.asarray(prior, dtype=np.float64)
            if p.shape != (self.dim,):
                raise ConfigError(
                    f"estimator {self.name}: state prior must have shape ({self.dim},); "
                    f"got {p.shape}"
                )
            self.prior = p
        self.external = external
