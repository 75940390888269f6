"""Zeroth-order gradient estimators against functions with known gradients (numpy only, fast).

Test functions: a quadratic f(x) = 0.5 x^T H x + b^T x with a random SPD H in d = 30, and a
linear f(x) = b^T x. On both, every estimator here is exact in expectation: Gaussian and
sphere smoothing of a quadratic change f only by a constant, the forward-difference
curvature term is even in u and averages out, and central differences of a quadratic are
exact. So the unbiasedness check compares the mean of N draws with grad f itself.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from methods.errors import ConfigError
from methods.estimators import (
    ESTIMATORS,
    EstimatorConfig,
    GradientEstimator,
    make_estimator,
    prgf_lambda,
)

ALL = sorted(ESTIMATORS)
STATEFUL = ("spsa", "spsa_gc", "prgf")
#: exact in expectation on quadratics and linear functions (E[g] = grad f).
EXACT_ON_QUADRATICS = ("gaussian", "antithetic", "sphere", "orthogonal", "spsa", "coordinate")
D = 30


class Quadratic:
    """f(x) = 0.5 x^T H x + b^T x, H = A A^T / d + I/2 (SPD, eigenvalues in about [0.5, 4.5])."""

    def __init__(self, d: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        a = rng.standard_normal((d, d))
        self.h = a @ a.T / d + 0.5 * np.eye(d)
        self.b = rng.standard_normal(d)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        return np.sum((0.5 * points @ self.h + self.b) * points, axis=1)

    def grad(self, x: np.ndarray) -> np.ndarray:
        return self.h @ x + self.b


class Linear:
    """f(x) = b^T x."""

    def __init__(self, d: int, seed: int = 0) -> None:
        self.b = np.random.default_rng(seed).standard_normal(d)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        return points @ self.b

    def grad(self, x: np.ndarray) -> np.ndarray:
        del x
        return self.b.copy()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def estimate(est: GradientEstimator, f, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    points = est.perturb(x, rng)
    return est.combine(x, points, f(points))


def draws(
    est: GradientEstimator, f, x: np.ndarray, n: int, seed: int, fresh: bool = False
) -> np.ndarray:
    """(n, d) estimates; ``fresh`` restores the initial state before each one (i.i.d. draws)."""
    rng = np.random.default_rng(seed)
    start = est.state_dict()
    out = np.empty((n, est.dim))
    for i in range(n):
        if fresh:
            est.load_state_dict(start)
        out[i] = estimate(est, f, x, rng)
    return out


# --------------------------------------------------------------------- (a) shapes and costs


EXPECTED_COST = {
    "gaussian": lambda q: q + 1,
    "antithetic": lambda q: 2 * q,
    "sphere": lambda q: q + 1,
    "spsa": lambda q: 2 * q,
    "spsa_gc": lambda q: 2 * q,
    "coordinate": lambda q: 2 * q,
    "orthogonal": lambda q: q + 1,
    "prgf": lambda q: q + 2,
}


def test_registry_has_every_estimator():
    assert set(ESTIMATORS) == set(EXPECTED_COST)
    for name, cls in ESTIMATORS.items():
        assert cls.name == name
        assert cls.__doc__ and "Cost" in cls.__doc__


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("q", [1, 5, 40])
def test_shapes_and_cost(name, q):
    d = 50 if name == "coordinate" else D
    f = Quadratic(d)
    est = make_estimator(name, EstimatorConfig(q=q), d)
    x = np.random.default_rng(1).standard_normal(d)
    for _ in range(2):  # the second pass runs with state (priors, momentum, k = 2)
        points = est.perturb(x, np.random.default_rng(2))
        assert points.shape == (est.queries_per_step, d)
        assert est.queries_per_step == EXPECTED_COST[name](q)
        g = est.combine(x, points, f(points))
        assert g.shape == (d,) and g.dtype == np.float64 and np.all(np.isfinite(g))


@pytest.mark.parametrize("name", ALL)
def test_combine_rejects_wrong_shapes(name):
    est = make_estimator(name, EstimatorConfig(q=4), D)
    x = np.zeros(D)
    points = est.perturb(x, np.random.default_rng(0))
    with pytest.raises(ConfigError):
        est.combine(x, points, np.zeros(len(points) - 1))
    with pytest.raises(ConfigError):
        est.combine(x, points[:-1], np.zeros(len(points) - 1))
    with pytest.raises(ConfigError):
        est.perturb(np.zeros(D + 1), np.random.default_rng(0))


# --------------------------------------------------------------------- (b) bias


@pytest.mark.parametrize("name", EXACT_ON_QUADRATICS)
def test_mean_matches_gradient_within_standard_error(name):
    """Mean of N i.i.d. estimates vs grad f on the quadratic; tolerance from the variance.

    For i.i.d. draws with covariance S, E|mean - E g|^2 = tr(S)/N. We require
    |mean - grad f|^2 <= 9 tr(S_hat)/N (three standard errors in norm): the ratio has mean 1
    and, even if S were rank one (a chi-square with 1 degree of freedom, the worst case), it
    exceeds 9 with probability 0.27%; with S spread over d = 30 directions the tail is
    negligible (and the seeds are fixed). With q = 16 and N = 800 the tolerance is about
    3 sqrt((d+1)/(q N)) = 15% of |grad f| for the Gaussian estimators (theory:
    tr S = (d+1)|grad f|^2/q); it must be below 20%, so a 20% bias or scale error fails.
    """
    f = Quadratic(D, seed=3)
    x = np.random.default_rng(4).standard_normal(D)
    grad = f.grad(x)
    est = make_estimator(name, EstimatorConfig(q=16), D)
    n = 800
    gs = draws(est, f, x, n, seed=5)
    mean = gs.mean(axis=0)
    trace = float(gs.var(axis=0, ddof=1).sum())
    tol2 = 9.0 * trace / n
    assert tol2 < (0.2 * np.linalg.norm(grad)) ** 2, "tolerance too loose to be a test"
    assert np.sum((mean - grad) ** 2) <= tol2


def test_unbiased_flags():
    assert {n for n, c in ESTIMATORS.items() if c.unbiased} == {
        "gaussian", "antithetic", "sphere", "orthogonal"
    }


@pytest.mark.parametrize("name", ["spsa", "spsa_gc", "coordinate", "prgf"])
def test_biased_means_point_along_gradient(name):
    """Biased estimators (i.i.d. draws from the initial state): mean within 0.99 in cosine.

    spsa_gc from a fresh state returns (1 + beta) g, prgf with no prior is the projection-
    scaled sphere estimate (shrunk by about E[cos^2]), so only the direction is checked.
    """
    f = Quadratic(D, seed=6)
    x = np.random.default_rng(7).standard_normal(D)
    est = make_estimator(name, EstimatorConfig(q=8), D)
    mean = draws(est, f, x, 600, seed=8, fresh=True).mean(axis=0)
    assert cosine(mean, f.grad(x)) > 0.99


# --------------------------------------------------------------------- (c) cosine versus q


@pytest.mark.parametrize("name", ALL)
def test_cosine_grows_with_q(name):
    """Mean cosine over i.i.d. draws increases for q = 1, 4, 16, 64 (d = 128, linear f).

    For Gaussian/sphere directions E[cos^2] = q/(q + d + 1) approximately, so for q << d the
    mean cosine is about sqrt(q/d) (about sqrt(2/pi)/sqrt(d) = 0.8/sqrt(d) at q = 1): we
    check the order of magnitude, 0.5 < mean cos / sqrt(q/d) < 1.5 for q = 1, 4, 16. It holds
    for every estimator here: SPSA's Rademacher and ZOO's coordinate blocks give the same
    sqrt(q/d) law, the stateful ones are drawn from their initial state (spsa_gc then returns
    (1 + beta) g, same cosine; prgf without a prior is its sphere fallback with q + 1
    directions).
    """
    d = 128
    f = Linear(d, seed=11)
    x = np.zeros(d)
    grad = f.grad(x)
    means = []
    for q in (1, 4, 16, 64):
        est = make_estimator(name, EstimatorConfig(q=q), d)
        gs = draws(est, f, x, 120, seed=12, fresh=True)
        means.append(np.mean([cosine(g, grad) for g in gs]))
    assert all(a < b for a, b in zip(means, means[1:])), means
    for q, m in zip((1, 4, 16), means):
        assert 0.5 < m / np.sqrt(q / d) < 1.5, (q, m)


# --------------------------------------------------------------------- (d) determinism


@pytest.mark.parametrize("name", ALL)
def test_deterministic_given_rng(name):
    f = Quadratic(D)
    x = np.random.default_rng(13).standard_normal(D)
    runs = []
    for global_seed in (0, 1):
        np.random.seed(global_seed)  # must not matter: no global RNG anywhere
        est = make_estimator(name, EstimatorConfig(q=6), D)
        rng = np.random.default_rng(14)
        runs.append([estimate(est, f, x, rng) for _ in range(3)])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    other = make_estimator(name, EstimatorConfig(q=6), D)
    assert not np.array_equal(estimate(other, f, x, np.random.default_rng(15)), runs[0][0])


# --------------------------------------------------------------------- (e) state round trip


@pytest.mark.parametrize("name", ALL)
def test_state_dict_round_trip_through_pickle(name):
    f = Quadratic(D)
    x = np.random.default_rng(16).standard_normal(D)
    est = make_estimator(name, EstimatorConfig(q=5), D)
    rng = np.random.default_rng(17)
    for _ in range(3):
        estimate(est, f, x, rng)
    state = pickle.loads(pickle.dumps(est.state_dict()))
    if name not in STATEFUL:
        assert state == {}
    clone = make_estimator(name, EstimatorConfig(q=5), D)
    clone.load_state_dict(state)
    for _ in range(2):
        a = estimate(est, f, x, np.random.default_rng(18))
        b = estimate(clone, f, x, np.random.default_rng(18))
        np.testing.assert_array_equal(a, b)
    if name in STATEFUL:  # the state really matters: a fresh estimator differs
        fresh = make_estimator(name, EstimatorConfig(q=5), D)
        p_fresh, p_est = (e.perturb(x, np.random.default_rng(19)) for e in (fresh, est))
        g_fresh, g_est = fresh.combine(x, p_fresh, f(p_fresh)), est.combine(x, p_est, f(p_est))
        assert not (np.array_equal(p_fresh, p_est) and np.array_equal(g_fresh, g_est))


def test_prgf_external_prior_survives_round_trip():
    f = Quadratic(D)
    x = np.zeros(D)
    est = make_estimator("prgf", EstimatorConfig(q=4), D)
    est.set_prior(np.arange(D, dtype=float))
    estimate(est, f, x, np.random.default_rng(0))
    state = pickle.loads(pickle.dumps(est.state_dict()))
    assert state["external"] is True
    clone = make_estimator("prgf", EstimatorConfig(q=4), D)
    clone.load_state_dict(state)
    a = estimate(est, f, x, np.random.default_rng(1))
    np.testing.assert_array_equal(a, estimate(clone, f, x, np.random.default_rng(1)))
    with pytest.raises(ConfigError):
        clone.load_state_dict({"prior": [0.0] * (D + 1), "external": True})


# --------------------------------------------------------------------- SPSA specifics


def test_spsa_radius_decays_with_the_step_counter():
    est = make_estimator("spsa", EstimatorConfig(q=2, mu=0.01, gamma=0.101), D)
    f = Linear(D)
    x = np.zeros(D)
    for k in (1, 2, 3):
        assert est.k == k
        points = est.perturb(x, np.random.default_rng(k))
        np.testing.assert_allclose(np.abs(points[0] - x), 0.01 / k**0.101)  # Rademacher: |D_j| = 1
        est.combine(x, points, f(points))


def test_spsa_gc_is_blackvip_update_over_plain_spsa():
    """spsa_gc returns g_k + beta m_k with m_k = beta m_{k-1} + g_k, g_k the plain SPSA estimate."""
    f = Quadratic(D)
    x = np.random.default_rng(19).standard_normal(D)
    common = dict(q=3, mu=0.01, gamma=0.2, spsa_distribution="segmented")
    plain = make_estimator("spsa", EstimatorConfig(**common), D)
    gc = make_estimator("spsa_gc", EstimatorConfig(**common, momentum=0.9), D)
    m = np.zeros(D)
    for k in range(4):
        points = plain.perturb(x, np.random.default_rng(k))
        np.testing.assert_array_equal(points, gc.perturb(x, np.random.default_rng(k)))
        magnitudes = np.abs(points[0] - x) / (0.01 / (k + 1) ** 0.2)  # |D_j| in [0.5, 1)
        assert magnitudes.min() >= 0.5 - 1e-12 and magnitudes.max() < 1.0 + 1e-12
        g = plain.combine(x, points, f(points))
        m = 0.9 * m + g
        np.testing.assert_allclose(gc.combine(x, points, f(points)), g + 0.9 * m, rtol=1e-12)


def test_coordinate_touches_only_the_block():
    d, q = 40, 6
    f = Quadratic(d)
    x = np.random.default_rng(20).standard_normal(d)
    est = make_estimator("coordinate", EstimatorConfig(q=q, mu=1e-4), d)
    points = est.perturb(x, np.random.default_rng(21))
    g = est.combine(x, points, f(points))
    block = np.flatnonzero(g)
    assert len(block) == q
    # central differences of a quadratic are exact: g_i = (d/q) grad_i on the block
    np.testing.assert_allclose(g[block], (d / q) * f.grad(x)[block], rtol=1e-6)


# --------------------------------------------------------------------- (f) PRGF and orthogonal


def test_prgf_lambda_closed_form():
    d, q = 50, 4
    lo, hi = 1 / (d + 2 * q - 2), (2 * q - 1) / (d + 2 * q - 2)
    assert prgf_lambda(0.0, d, q) == 0.0
    assert prgf_lambda(np.sqrt(lo) * 0.99, d, q) == 0.0
    assert prgf_lambda(np.sqrt(hi) * 1.01, d, q) == 1.0
    assert prgf_lambda(1.0, d, q) == 1.0
    # continuous at both thresholds and increasing in between
    assert prgf_lambda(np.sqrt(lo) * (1 + 1e-6), d, q) < 1e-3
    assert prgf_lambda(np.sqrt(hi) * (1 - 1e-6), d, q) > 0.999
    inner = [prgf_lambda(a, d, q) for a in np.linspace(np.sqrt(lo), np.sqrt(hi), 20)[1:-1]]
    assert all(a < b for a, b in zip(inner, inner[1:]))


def _mean_cos(est: GradientEstimator, f, x, n: int, seed: int, fresh: bool = True) -> float:
    grad = f.grad(x)
    return float(np.mean([cosine(g, grad) for g in draws(est, f, x, n, seed, fresh=fresh)]))


def test_prgf_with_good_prior_beats_sphere():
    d, q = 50, 4
    f = Quadratic(d, seed=22)
    x = np.random.default_rng(23).standard_normal(d)
    grad = f.grad(x)
    sphere = _mean_cos(make_estimator("sphere", EstimatorConfig(q=q), d), f, x, 200, 24)

    exact = make_estimator("prgf", EstimatorConfig(q=q), d)
    exact.set_prior(grad)
    assert _mean_cos(exact, f, x, 50, 25) > 0.99 > sphere
    assert exact.last_lambda == 1.0

    # a prior at 60 degrees (alpha = 0.5): PRGF still clearly beats sphere
    other = np.linalg.qr(np.stack([grad, np.random.default_rng(26).standard_normal(d)], 1))[0][:, 1]
    half = 0.5 * grad / np.linalg.norm(grad) + np.sqrt(0.75) * other
    partial = make_estimator("prgf", EstimatorConfig(q=q), d)
    partial.set_prior(half)
    assert _mean_cos(partial, f, x, 200, 27) > sphere + 0.15
    assert 0.3 < partial.last_alpha < 0.7 and 0.0 < partial.last_lambda <= 1.0

    # the history prior (the previous estimate) accumulates at a fixed point
    history = make_estimator("prgf", EstimatorConfig(q=q), d)
    gs = draws(history, f, x, 60, seed=28)
    assert np.mean([cosine(g, grad) for g in gs[20:]]) > sphere + 0.15


def test_prgf_without_prior_is_sphere_fallback():
    est = make_estimator("prgf", EstimatorConfig(q=4), D)
    f = Linear(D)
    x = np.zeros(D)
    g = estimate(est, f, x, np.random.default_rng(0))
    assert est.last_lambda == 0.0 and est.last_alpha is None
    assert est.prior is not None  # the history prior is now the estimate
    np.testing.assert_allclose(est.prior, g / np.linalg.norm(g))
    # the projection scaling never overshoots the gradient
    assert np.linalg.norm(g) <= np.linalg.norm(f.grad(x)) * (1 + 1e-9)
    est.set_prior(None)
    assert est.prior is None and est.state_dict() == {"prior": None, "external": False}
    with pytest.raises(ConfigError):
        est.set_prior(np.zeros(D))


def test_orthogonal_has_lower_variance_than_gaussian_near_q_equal_d():
    """Linear f, q = d: theory E|g - grad|^2 = 2|grad|^2/d (orthogonal) vs (d+1)|grad|^2/q."""
    d = 20
    f = Linear(d, seed=29)
    x = np.zeros(d)
    grad = f.grad(x)
    err = {}
    for name in ("gaussian", "orthogonal"):
        est = make_estimator(name, EstimatorConfig(q=d), d)
        gs = draws(est, f, x, 300, seed=30)
        err[name] = float(np.mean(np.sum((gs - grad) ** 2, axis=1))) / float(grad @ grad)
    assert err["orthogonal"] < 0.25 * err["gaussian"]
    assert err["orthogonal"] == pytest.approx(2 / d, rel=0.35)
    assert err["gaussian"] == pytest.approx((d + 1) / d, rel=0.35)


def test_orthogonal_directions_are_orthogonal_in_blocks():
    d, q = 8, 11
    est = make_estimator("orthogonal", EstimatorConfig(q=q, mu=1.0), d)
    u = est.perturb(np.zeros(d), np.random.default_rng(31))[1:]
    gram = u[:d] @ u[:d].T
    np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0, atol=1e-10)
    gram = u[d:] @ u[d:].T
    np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0, atol=1e-10)


# --------------------------------------------------------------------- (g) configuration errors


def test_unknown_name_lists_valid_names():
    with pytest.raises(ConfigError) as info:
        make_estimator("gausian", EstimatorConfig(), D)
    for name in ESTIMATORS:
        assert name in str(info.value)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("q", [0, -3])
def test_q_below_one_raises(name, q):
    with pytest.raises(ConfigError):
        make_estimator(name, EstimatorConfig(q=q), D)


@pytest.mark.parametrize(
    "name, config",
    [
        ("gaussian", EstimatorConfig(mu=0.0)),
        ("sphere", EstimatorConfig(mu=-1.0)),
        ("antithetic", EstimatorConfig(mu=float("nan"))),
        ("spsa", EstimatorConfig(gamma=-0.1)),
        ("spsa", EstimatorConfig(spsa_distribution="gaussian")),
        ("spsa_gc", EstimatorConfig(momentum=1.0)),
        ("coordinate", EstimatorConfig(q=D + 1)),
    ],
)
def test_bad_settings_raise(name, config):
    with pytest.raises(ConfigError):
        make_estimator(name, config, D)


def test_defaults():
    assert make_estimator("sphere", EstimatorConfig(), 512).mu == pytest.approx(1 / 512)
    assert make_estimator("sphere", EstimatorConfig(), 5000).mu == pytest.approx(1e-3)
    spsa = make_estimator("spsa", EstimatorConfig(), D)
    gc = make_estimator("spsa_gc", EstimatorConfig(), D)
    assert (spsa.c, spsa.gamma, spsa.distribution) == (0.01, 0.101, "rademacher")
    assert (gc.c, gc.gamma, gc.beta, gc.distribution) == (0.01, 0.2, 0.9, "segmented")
    assert make_estimator("coordinate", EstimatorConfig(q=4), D).h == 1e-4
