"""Zeroth-order gradient estimators: plug-ins of the zeroth-order method.

An estimator turns points and their losses into a gradient vector; it never
touches a model. One estimate is::

    points = est.perturb(x, rng)              # (est.queries_per_step, dim), evaluated together
    g = est.combine(x, points, losses)        # (dim,)

All points of one estimate are evaluated in one request, on one mini-batch
(common random numbers). Formulas: ../shared/reference/METHODS.md section 9.

Conventions shared by every estimator here:

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

__all__ = ["ESTIMATORS", "EstimatorConfig", "GradientEstimator", "make_estimator"]


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


#: name -> estimator class; filled below.
ESTIMATORS: dict[str, type[GradientEstimator]] = {}


def _register(cls: type[GradientEstimator]) -> type[GradientEstimator]:
    if cls.name in ESTIMATORS:
        raise ConfigError(f"estimator name {cls.name!r} is already registered")
    ESTIMATORS[cls.name] = cls
    return cls


def make_estimator(name: str, config: EstimatorConfig, dim: int) -> GradientEstimator:
    """The estimator called ``name``; a miss lists the valid names."""
    try:
        cls = ESTIMATORS[name]
    except KeyError:
        raise ConfigError(
            f"unknown estimator {name!r}; valid names: {', '.join(sorted(ESTIMATORS))}"
        ) from None
    return cls(config, dim)


# --------------------------------------------------------------------------- sampling


def _unit_rows(a: np.ndarray) -> np.ndarray:
    """Rows of ``a`` scaled to unit Euclidean norm (a zero row stays zero)."""
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.where(norms > 0, norms, 1.0)


def _sphere(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """(n, dim) independent directions uniform on the unit sphere S^(dim-1)."""
    return _unit_rows(rng.standard_normal((n, dim)))


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


# --------------------------------------------------------------------------- one-sided


class _OneSided(GradientEstimator):
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


@_register
class GaussianSmoothing(_OneSided):
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


@_register
class SphereRGE(_OneSided):
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
        return _sphere(rng, self.config.q, self.dim)


@_register
class OrthogonalGaussian(_OneSided):
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


# --------------------------------------------------------------------------- two-sided


@_register
class Antithetic(GradientEstimator):
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

    @property
    def queries_per_step(self) -> int:
        return 2 * self.config.q

    def perturb(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = self._vector(x)
        step = self.mu * rng.standard_normal((self.config.q, self.dim))
        return np.vstack([x + step, x - step])

    def combine(self, x: np.ndarray, points: np.ndarray, losses: np.ndarray) -> np.ndarray:
        _, points, losses = self._batch(x, points, losses)
        q = self.config.q
        steps = 0.5 * (points[:q] - points[q:])                  # mu u_i
        diffs = losses[:q] - losses[q:]                          # f(x + mu u_i) - f(x - mu u_i)
        # g = 1/(2 q mu) sum_i diff_i u_i, u_i = steps_i / mu
        return (diffs @ steps) / (2.0 * q * self.mu * self.mu)


@_register
class SPSA(GradientEstimator):
    """Simultaneous perturbation stochastic approximation (Spall, IEEE TAC 1992; Spall 1998,
    "Implementation of the simultaneous perturbation algorithm for stochastic optimization").

    g_j = (1/q) sum_i [f(x + c_k D_i) - f(x - c_k D_i)] / (2 c_k D_ij),   c_k = c / k^gamma,

    D_i with i.i.d. Rademacher entries (or BlackVIP's segmented uniform, see
    ``spsa_distribution``), k = 1, 2, ... counts the estimates made (kept in the state,
    incremented by every ``combine``). The step size a_k belongs to the optimiser.

    Biased in general (O(c_k^2) for smooth f); exact in expectation on quadratics because the
    central difference of a quadratic is exact.

    Cost: 2q evaluations (rows 0..q-1: x + c_k D_i; rows q..2q-1: x - c_k D_i).
    Config: ``q``; ``mu`` = c (default 0.01, BlackVIP/ZIP); ``gamma`` (default 0.101, Spall's
    standard; BlackVIP 0.2, ZIP 0.1); ``spsa_distribution`` (default "rademacher").
    State: ``k``.
    """

    name = "spsa"
    unbiased = False
    _default_gamma: ClassVar[float] = 0.101
    _default_distribution: ClassVar[str] = "rademacher"

    def __init__(self, config: EstimatorConfig, dim: int) -> None:
        super().__init__(config, dim)
        self.c = self._radius(0.01)
        gamma = self._default_gamma if config.gamma is None else config.gamma
        if not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma >= 0):
            raise ConfigError(
                f"estimator {self.name}: gamma must be a finite number >= 0; got {gamma!r}"
            )
        self.gamma = float(gamma)
        dist = config.spsa_distribution or self._default_distribution
        if dist not in ("rademacher", "segmented"):
            raise ConfigError(
                f"estimator {self.name}: spsa_distribution must be 'rademacher' or 'segmented'; "
                f"got {dist!r}"
            )
        self.distribution = dist
        self.k = 1

    @property
    def queries_per_step(self) -> int:
        return 2 * self.config.q

    @property
    def c_k(self) -> float:
        """The current radius c_k = c / k^gamma (Spall 1998)."""
        return self.c / self.k**self.gamma

    def _deltas(self, rng: np.random.Generator) -> np.ndarray:
        shape = (self.config.q, self.dim)
        signs = 2.0 * rng.integers(0, 2, size=shape) - 1.0
        if self.distribution == "rademacher":
            return signs
        # BlackVIP (changdaeoh/BlackVIP: trainers/blackvip.py): |D_j| = (U + 1)/2, U ~ U[0, 1)
        return signs * (0.5 + 0.5 * rng.random(shape))

    def perturb(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = self._vector(x)
        step = self.c_k * self._deltas(rng)
        return np.vstack([x + step, x - step])

    def _estimate(self, x: np.ndarray, points: np.ndarray, losses: np.ndarray) -> np.ndarray:
        _, points, losses = self._batch(x, points, losses)
        q = self.config.q
        spans = points[:q] - points[q:]                          # 2 c_k D_i
        diffs = (losses[:q] - losses[q:])[:, None]               # f(x + c_k D_i) - f(x - c_k D_i)
        # g_j = mean_i diff_i / (2 c_k D_ij); a span lost to rounding contributes 0.
        ratios = np.divide(diffs, spans, out=np.zeros_like(spans), where=spans != 0)
        self.k += 1
        return ratios.mean(axis=0)

    def combine(self, x: np.ndarray, points: np.ndarray, losses: np.ndarray) -> np.ndarray:
        return self._estimate(x, points, losses)

    def state_dict(self) -> dict[str, Any]:
        return {"k": int(self.k)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            k = int(state["k"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(
                f"estimator {self.name}: state needs an integer 'k'; got {state!r}"
            ) from None
        if k < 1:
            raise ConfigError(f"estimator {self.name}: state k must be >= 1; got {k}")
        self.k = k


@_register
class SPSAGC(SPSA):
    """SPSA with gradient correction, BlackVIP (Oh et al., CVPR 2023, arXiv 2303.14773;
    changdaeoh/BlackVIP: trainers/blackvip.py).

    g_k as in ``spsa`` (two-sided, averaged over q draws, c_k = c / k^gamma), then

        m_k = beta m_{k-1} + g_k   (m_0 = 0),      returned direction  d_k = g_k + beta m_k,

    so that a plain step x <- x - a_k d_k reproduces BlackVIP's update
    w <- w - a_k (g_k + beta m_k) (a Nesterov-style look-ahead). The correction is an update
    rule, not an estimate: the estimator carries it so that the optimiser stays plain SGD; do
    not combine it with an optimiser that adds momentum of its own. Not unbiased: on a fixed
    gradient the direction tends to g / (1 - beta).

    Cost: 2q evaluations (layout as ``spsa``); BlackVIP uses q = 5.
    Config: ``q``; ``mu`` = c (default 0.01); ``gamma`` (default 0.2, BlackVIP; 0.1 on some data
    sets); ``momentum`` = beta (default 0.9); ``spsa_distribution`` (default "segmented",
    |D_j| ~ U[0.5, 1) with a random sign, as BlackVIP's code).
    State: ``k`` and ``m``.
    """

    name = "spsa_gc"
    unbiased = False
    _default_gamma: ClassVar[float] = 0.2
    _default_distribution: ClassVar[str] = "segmented"

    def __init__(self, config: EstimatorConfig, dim: int) -> None:
        super().__init__(config, dim)
        beta = config.momentum
        if not (isinstance(beta, (int, float)) and 0 <= beta < 1):
            raise ConfigError(f"estimator {self.name}: momentum must be in [0, 1); got {beta!r}")
        self.beta = float(beta)
        self.m = np.zeros(self.dim)

    def combine(self, x: np.ndarray, points: np.ndarray, losses: np.ndarray) -> np.ndarray:
        g = self._estimate(x, points, losses)
        self.m = self.beta * self.m + g                          # m_k = beta m_{k-1} + g_k
        return g + self.beta * self.m                            # g_k + beta m_k

    def state_dict(self) -> dict[str, Any]:
        return {"k": int(self.k), "m": self.m.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        try:
            m = np.asarray(state["m"], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"estimator {self.name}: state needs a vector 'm'") from None
        if m.shape != (self.dim,):
            raise ConfigError(
                f"estimator {self.name}: state m must have shape ({self.dim},); got {m.shape}"
            )
        self.m = m


@_register
class CoordinateBlock(GradientEstimator):
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

    @property
    def queries_per_step(self) -> int:
        return 2 * self.config.q

    def perturb(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = self._vector(x)
        q = self.config.q
        block = rng.choice(self.dim, size=q, replace=False)
        step = np.zeros((q, self.dim))
        step[np.arange(q), block] = self.h
        return np.vstack([x + step, x - step])

    def combine(self, x: np.ndarray, points: np.ndarray, losses: np.ndarray) -> np.ndarray:
        _, points, losses = self._batch(x, points, losses)
        q = self.config.q
        spans = points[:q] - points[q:]                          # 2h e_i
        sq = np.einsum("ij,ij->i", spans, spans)                 # (2h)^2
        diffs = losses[:q] - losses[q:]
        # sum_i diff_i * spans_i / |spans_i|^2 = sum_i diff_i / (2h) e_i
        weights = np.divide(diffs, sq, out=np.zeros_like(diffs), where=sq > 0)
        return (self.dim / q) * (weights @ spans)


# --------------------------------------------------------------------------- prior-guided


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


@_register
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
            dirs = _sphere(rng, q + 1, self.dim)                # fallback: plain sphere sampling
        else:
            v = self.prior / np.linalg.norm(self.prior)
            xi = rng.standard_normal((q, self.dim))
            w = _unit_rows(xi - np.outer(xi @ v, v))            # normalize((I - v v^T) xi_i)
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
