"""The method contract, checked: a kit to run on a method of one's own (and on every method here).

Each check runs the method through the one loop (``sweep.run.run_method``) on
an analytic objective that counts queries as the oracle does (a quadratic;
for methods that train on features, a CLIP-shaped synthetic objective), in
milliseconds, and raises ``AssertionError`` saying what broke:

- ``check_ask_tell``: shapes of ask, recommend; stop is a dict;
- ``check_reproducible``: the same seed gives the same run, point for point;
- ``check_checkpoint``: ``state_dict``/``load_state_dict`` and a pickle both
  restore the method exactly (a trial goes on from its checkpoint this way);
- ``check_budget``: in every query unit, the run stops when the meter would
  refuse the next request, never past the budget;
- ``check_improves``: a run of 60 asks clearly lowers the loss from the start;
- ``check_space``: the default search space builds, every end of every range
  gives a valid config.

``check_method`` runs them all. With pytest::

    from sweep.testing import kit

    kit.load("random_search.py")           # a plugin file (or a module name)

    def test_random_search_keeps_the_contract():
        kit.check_method("random-search")

``tests/test_conformance.py`` runs the kit on every method promptsweep ships.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from methods.base import Method, SearchSpace
from sweep.budget import UNITS, BudgetSpec
from sweep.run import run_method
from sweep.spec import SWEEP_METHODS, Plugin, load_plugin, make_space
from sweep.testing.objectives import QuadraticObjective, SyntheticClipObjective

__all__ = ["check_ask_tell", "check_budget", "check_checkpoint", "check_improves",
           "check_method", "check_reproducible", "check_space", "load", "make"]


def load(ref: str, base: str | Path = ".") -> Plugin:
    """Load a plugin (a ``.py`` file relative to ``base``, or a module name) for the checks."""
    return load_plugin(ref, Path(base).resolve())


def make(name: str, seed: int = 0, asks: int = 30, unit: str = "candidate_evals",
         params: dict[str, Any] | None = None) -> tuple[Method, QuadraticObjective]:
    """Method ``name`` (``params`` over its defaults) on a small space, and its analytic
    objective with a budget of ``asks`` asks and a half (not a multiple: the edge)."""
    entry = SWEEP_METHODS.entry(name)
    config = SWEEP_METHODS.make_config(name, params)
    deep = getattr(config, "deep", False)
    dim = 120 if deep else 60
    blocks = ((0, 40), (40, 80), (80, 120)) if deep else None
    space = SearchSpace(dim=dim, blocks=blocks)
    method = SWEEP_METHODS.create(name, config, space, seed)
    cls = SyntheticClipObjective if entry.method_cls.needs_features else QuadraticObjective
    per_ask = cls(dim, seed=7).cost(max(method.ask_size, 1), method.minibatch)[unit]
    return method, cls(dim, budget=BudgetSpec(unit=unit, limit=asks * per_ask + per_ask // 2),
                       seed=7)


def _loss(objective, z: np.ndarray) -> float:
    """The loss of ``z`` on a budget-free copy of ``objective``."""
    return float(type(objective)(objective.dim, seed=7)(np.atleast_2d(z)).losses[0])


def _step(method: Method, objective) -> None:
    z = method.ask()
    method.tell(z, objective(z, minibatch=method.minibatch, features=method.needs_features,
                             gradient=method.needs_gradient))


def check_ask_tell(name: str, params: dict[str, Any] | None = None) -> None:
    method, objective = make(name, params=params)
    if method.ask_size == 0:
        assert method.stop(), f"{name}: a method that asks nothing must say why it stops"
        return
    z = method.ask()
    assert z.shape == (method.ask_size, method.dim) and np.issubdtype(z.dtype, np.floating), \
        f"{name}: ask() gave {z.shape} {z.dtype}, not ({method.ask_size}, {method.dim}) floats"
    method.tell(z, objective(z, minibatch=method.minibatch, features=method.needs_features,
                             gradient=method.needs_gradient))
    assert method.recommend().shape == (method.dim,), f"{name}: recommend() is not ({method.dim},)"
    assert isinstance(method.stop(), dict), f"{name}: stop() must return a dict"


def check_reproducible(name: str, params: dict[str, Any] | None = None) -> None:
    runs = []
    for _ in range(2):
        method, objective = make(name, seed=3, asks=8, params=params)
        asked: list[np.ndarray] = []
        ask = method.ask
        method.ask = lambda: asked.append(ask()) or asked[-1]  # every point it asks for
        result = run_method(method, objective)
        runs.append((asked, result.recommendation, result.used))
    (asked_a, rec_a, used_a), (asked_b, rec_b, used_b) = runs
    same = (len(asked_a) == len(asked_b) and all(map(np.array_equal, asked_a, asked_b))
            and np.array_equal(rec_a, rec_b) and used_a == used_b)
    assert same, (f"{name}: the same seed gave two different runs (draw from the seed, not "
                  "from a global or clock-seeded generator)")


def check_checkpoint(name: str, params: dict[str, Any] | None = None) -> None:
    method, objective = make(name, seed=2, asks=40, params=params)
    if method.ask_size == 0:
        assert pickle.loads(pickle.dumps(method)).stop(), f"{name}: its copy does not stop"
        return
    for _ in range(3):
        _step(method, objective)
    clone = pickle.loads(pickle.dumps(method))
    fresh = SWEEP_METHODS.create(name, method.config, method.space, 2)
    fresh.load_state_dict(pickle.loads(pickle.dumps(method.state_dict())))
    z = method.ask()
    assert np.array_equal(fresh.ask(), z), \
        f"{name}: load_state_dict(state_dict()) does not go on as the method does"
    assert np.array_equal(clone.ask(), z), f"{name}: a pickled copy does not go on identically"
    assert np.array_equal(clone.recommend(), method.recommend()), \
        f"{name}: a pickled copy recommends another point"


def check_budget(name: str, params: dict[str, Any] | None = None) -> None:
    for unit in UNITS:
        method, objective = make(name, asks=5, unit=unit, params=params)
        result = run_method(method, objective)
        assert objective.used[unit] <= objective.budget.limit, \
            f"{name}: spent {objective.used[unit]} {unit} of {objective.budget.limit}"
        if method.ask_size:
            per_ask = objective.cost(method.ask_size, method.minibatch)[unit]
            assert result.stop_reasons, f"{name}: the run in {unit} ended without a reason"
            assert "budget" not in result.stop_reasons or \
                objective.budget.limit - objective.used[unit] < per_ask, \
                f"{name}: stopped for the budget in {unit} with an ask's worth left"


def check_improves(name: str, params: dict[str, Any] | None = None) -> None:
    method, objective = make(name, seed=1, asks=60, params=params)
    if method.ask_size == 0:
        return  # tunes nothing (zero-shot)
    result = run_method(method, objective)
    before = _loss(objective, np.zeros(objective.dim))
    after = _loss(objective, result.recommendation)
    assert after < 0.8 * before, f"{name}: loss {before:.4f} -> {after:.4f} in 60 asks"


def check_space(name: str) -> None:
    """The default search space builds (``make_space`` checks every end of every range)."""
    make_space(name)


def check_method(name: str, params: dict[str, Any] | None = None) -> None:
    """Every check of the contract (``params``: values over the defaults, e.g. a step size at
    the objective's scale)."""
    for check in (check_space, check_ask_tell, check_reproducible, check_checkpoint,
                  check_budget, check_improves):
        check(name) if check is check_space else check(name, params)
