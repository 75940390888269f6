"""Simultaneous perturbation (SPSA) with Spall's decaying radius, and BlackVIP's SPSA-GC.

Two-sided, in the layout of ``methods.estimators.two_sided``; stateful: the
radius c_k decays with the count k of estimates made, and SPSA-GC carries its
momentum m_k. Conventions: ``methods.estimators.base``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from methods.errors import ConfigError
from methods.estimators.base import EstimatorConfig
from methods.estimators.two_sided import TwoSided

__all__ = ["SPSA", "SPSAGC"]


class SPSA(TwoSided):
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

    def _steps(self, rng: np.random.Generator) -> np.ndarray:
        return self.c_k * self._deltas(rng)

    def _estimate(self, x: np.ndarray, points: np.ndarray, losses: np.ndarray) -> np.ndarray:
        # spans 2 c_k D_i; diffs f(x + c_k D_i) - f(x - c_k D_i)
        spans, diffs = self._differences(x, points, losses)
        # g_j = mean_i diff_i / (2 c_k D_ij); a span lost to rounding contributes 0.
        ratios = np.divide(diffs[:, None], spans, out=np.zeros_like(spans), where=spans != 0)
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
