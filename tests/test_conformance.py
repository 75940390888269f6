"""Conformance of every registered method, through the one loop, on analytic objectives.

Each method runs on a quadratic (or, for adapter methods, a CLIP-shaped
synthetic objective with features) in 60-200 dimensions: output shapes,
identical results for identical seeds, the budget never exceeded in its
unit, clear improvement over the start, and pickle round trips.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import methods
from methods.base import SearchSpace
from sweep.budget import UNITS, BudgetSpec
from sweep.run import run_method
from sweep.testing import QuadraticObjective, SyntheticClipObjective

NAMES = methods.REGISTRY.names()

#: The quadratic's optimum lies about 1 from the start, so a CMA-ES step of 1 in
#: 60 dimensions (a norm of ~7.7) spends ~90 generations shrinking before it makes
#: progress; the ES step is set to the problem's scale, as a user would.
SCALE = {name: {"sigma0": 0.1} for name in ("bbt", "bpt-vlm", "bpt-vlm-deep")}


def make(name: str, seed: int = 0, asks: int = 30, unit: str = "candidate_evals"):
    """A method on a small space and its analytic objective, with a budget of ``asks`` asks."""
    method_cls = methods.REGISTRY.entry(name).method_cls
    config = methods.REGISTRY.make_config(name, SCALE.get(name))
    deep = getattr(config, "deep", False)
    dim = 120 if deep else 60
    blocks = ((0, 40), (40, 80), (80, 120)) if deep else None
    space = SearchSpace(dim=dim, blocks=blocks)
    method = methods.REGISTRY.create(name, config, space, seed)
    probe = (SyntheticClipObjective if method_cls.needs_features else QuadraticObjective)(dim, seed=7)
    per_ask = probe.cost(max(method.ask_size, 1), method.minibatch)[unit]
    budget = BudgetSpec(unit=unit, limit=asks * per_ask + per_ask // 2)  # not a multiple: the edge
    cls = SyntheticClipObjective if method_cls.needs_features else QuadraticObjective
    return method, cls(dim, budget=budget, seed=7)


def start_loss(objective) -> float:
    free = type(objective)(objective.dim, seed=7)
    return float(free(np.zeros((1, objective.dim))).losses[0])


def final_loss(objective, z) -> float:
    free = type(objective)(objective.dim, seed=7)
    return float(free(z[None]).losses[0])


@pytest.mark.parametrize("name", NAMES)
def test_ask_shape_and_tell(name):
    method, objective = make(name)
    if method.ask_size == 0:
        assert method.stop(), "a method that asks nothing must say why it stops"
        return
    z = method.ask()
    assert z.shape == (method.ask_size, method.dim) and np.issubdtype(z.dtype, np.floating)
    ev = objective(z, minibatch=method.minibatch, features=method.needs_features,
                   gradient=method.needs_gradient)
    method.tell(z, ev)
    assert method.recommend().shape == (method.dim,)
    assert isinstance(method.stop(), dict)


@pytest.mark.parametrize("name", NAMES)
def test_identical_seeds_give_identical_runs(name):
    runs = []
    for _ in range(2):
        method, objective = make(name, seed=3, asks=8)
        result = run_method(method, objective)
        runs.append((result.recommendation, result.used))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]


@pytest.mark.parametrize("unit", UNITS)
@pytest.mark.parametrize("name", NAMES)
def test_budget_never_exceeded(name, unit):
    method, objective = make(name, asks=5, unit=unit)
    result = run_method(method, objective)
    assert objective.used[unit] <= objective.budget.limit
    if method.ask_size:
        # It stopped for the budget (or its own reason), and spent what it could.
        per_ask = objective.cost(method.ask_size, method.minibatch)[unit]
        assert result.stop_reasons
        assert "budget" not in result.stop_reasons or objective.budget.limit - objective.used[unit] < per_ask


@pytest.mark.parametrize("name", NAMES)
def test_clear_improvement_over_the_start(name):
    method, objective = make(name, seed=1, asks=60)
    if method.ask_size == 0:
        pytest.skip("zero-shot tunes nothing")
    result = run_method(method, objective)
    before, after = start_loss(objective), final_loss(objective, result.recommendation)
    assert after < 0.8 * before, f"{name}: loss {before:.4f} -> {after:.4f}"


@pytest.mark.parametrize("name", NAMES)
def test_pickle_round_trip_continues_identically(name):
    method, objective = make(name, seed=2, asks=40)
    if method.ask_size == 0:
        assert pickle.loads(pickle.dumps(method)).stop()
        return
    for _ in range(3):
        z = method.ask()
        method.tell(z, objective(z, minibatch=method.minibatch, features=method.needs_features,
                                 gradient=method.needs_gradient))
    clone = pickle.loads(pickle.dumps(method))
    fresh = methods.REGISTRY.create(name, method.config, method.space, 2)
    fresh.load_state_dict(pickle.loads(pickle.dumps(method.state_dict())))
    z = method.ask()
    np.testing.assert_array_equal(clone.ask(), z)
    np.testing.assert_array_equal(fresh.ask(), z)
    np.testing.assert_array_equal(clone.recommend(), method.recommend())


def test_registry_rejects_collisions_and_unknown_names():
    entry = methods.REGISTRY.entry(NAMES[0])
    with pytest.raises(methods.ConfigError, match="already registered"):
        methods.REGISTRY.register(NAMES[0], entry.config_cls, entry.method_cls)
    with pytest.raises(methods.ConfigError, match="valid names"):
        methods.REGISTRY.entry("no-such-method")


def test_config_rejects_unknown_keys_and_wrong_types():
    with pytest.raises(methods.ConfigError, match="did you mean 'popsize'"):
        methods.REGISTRY.make_config("bpt-vlm", {"popsiz": 10})
    with pytest.raises(methods.ConfigError, match="'popsize' must be"):
        methods.REGISTRY.make_config("bpt-vlm", {"popsize": "thirty"})
