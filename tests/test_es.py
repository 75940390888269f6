"""The evolution strategies (methods.es_subspace, methods.es_pypop) on a numpy quadratic.

f(z) = 0.5 (z - z*)^T H (z - z*) in 100 dimensions (H diagonal, condition 10),
driven by a plain ask/tell loop. Besides the conformance properties (shapes,
seeds, progress, pickling), the drivers are checked against the libraries
themselves: bpt-vlm draws what pycma's own seeding draws, and each pypop7
method reproduces the library's blocking ``optimize()`` bit for bit.
"""

from __future__ import annotations

import dataclasses
import doctest
import importlib
import pickle

import numpy as np
import pytest

import methods
from methods import bbt, es_pypop, es_subspace
from methods.base import Evaluation, SearchSpace
from methods.errors import ConfigError
from methods.registry import Registry

MODULES = (es_subspace.__name__, bbt.__name__, es_pypop.__name__)
REGISTRY = Registry(spec for spec in methods.METHODS if spec.module in MODULES)
NAMES = REGISTRY.names()
PYPOP = ["bpt-vlm-lmcmaes", "bpt-vlm-mmes", "bpt-vlm-lmmaes"]
DIM = 100
BLOCKS = ((0, 25), (25, 50), (50, 75), (75, 100))


class Quadratic:
    """f(z) = 0.5 (z - z*)^T H (z - z*), H = diag(logspace(0, 1, dim)), z* ~ 2 N(0, I)."""

    def __init__(self, dim: int = DIM, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.h = np.logspace(0.0, 1.0, dim)
        self.z_star = 2.0 * rng.standard_normal(dim)

    def __call__(self, z: np.ndarray) -> np.ndarray:
        return 0.5 * (((np.atleast_2d(z) - self.z_star) ** 2) * self.h).sum(axis=1)


F = Quadratic()


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """pycma's eigendecompositions are small; OpenBLAS threads on a busy 2-core box make
    each 100x100 eigh ~100x slower (0.3 s instead of 3 ms), so the tests pin one thread."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # only a speed-up
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def make(name: str, seed: int = 0, **overrides):
    blocks = BLOCKS if name == "bpt-vlm-deep" else None
    return REGISTRY.create(name, overrides, SearchSpace(dim=DIM, blocks=blocks), seed)


def step(method, f=F) -> tuple[np.ndarray, np.ndarray]:
    """One ask/evaluate/tell round; returns the points and their losses."""
    n = method.ask_size
    z = method.ask()
    assert z.shape == (n, method.dim) and z.dtype == np.float64
    losses = f(z)
    method.tell(z, Evaluation(losses=losses))
    return z, losses


def run(method, evaluations: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Ask/tell until the next ask would exceed ``evaluations`` (the budget rule of the loop)."""
    zs, ls, used = [], [], 0
    while not method.stop() and used + method.ask_size <= evaluations:
        z, losses = step(method)
        zs.append(z)
        ls.append(losses)
        used += len(losses)
    return zs, ls


def test_registered_names_and_published_defaults():
    assert NAMES == sorted(["bbt", "bpt-vlm", "bpt-vlm-deep", *PYPOP])
    for name in NAMES:
        cls = REGISTRY.entry(name).config_cls
        assert cls.__dataclass_params__.frozen
        assert all(f.kw_only for f in dataclasses.fields(cls))
    c = REGISTRY.make_config("bpt-vlm")
    assert (c.n_text, c.n_visual, c.deep, c.intrinsic_dim_text, c.intrinsic_dim_visual) == (
        8, 5, False, 500, 500)
    assert (c.popsize, c.sigma0, c.bound) == (30, 1.0, 0.0)
    c = REGISTRY.make_config("bpt-vlm-deep")
    assert c.deep and (c.popsize, c.sigma0, c.n_text, c.n_visual) == (30, 1.0, 8, 5)
    c = REGISTRY.make_config("bbt")
    assert (c.n_text, c.n_visual, c.intrinsic_dim_text, c.popsize, c.sigma0) == (8, 0, 500, 20, 1.0)
    for name in PYPOP:
        c = REGISTRY.make_config(name)
        assert (c.n_individuals, c.sigma, c.n_text, c.n_visual) == (30, 1.0, 8, 5)
        assert (c.intrinsic_dim_text, c.intrinsic_dim_visual) == (500, 500)


@pytest.mark.parametrize("bad", [
    ("bpt-vlm", {"popsize": 1}), ("bpt-vlm", {"sigma0": 0.0}), ("bpt-vlm", {"bound": -1.0}),
    ("bpt-vlm-deep", {"deep": False}), ("bpt-vlm-mmes", {"n_individuals": 1}),
    ("bpt-vlm-lmcmaes", {"sigma": -1.0}), ("bpt-vlm-lmmaes", {"deep": True}),
])
def test_configs_reject_bad_values(bad):
    with pytest.raises(ConfigError):
        REGISTRY.make_config(*bad)


@pytest.mark.parametrize("name", NAMES)
def test_ask_shape_dtype_and_tell_checks(name):
    method = make(name)
    z = method.ask()
    assert z.shape == (method.ask_size, DIM) and z.dtype == np.float64
    np.testing.assert_array_equal(method.ask(), z)  # idempotent until told
    with pytest.raises(ConfigError, match="non-finite"):
        method.tell(z, Evaluation(losses=np.full(len(z), np.nan)))
    with pytest.raises(ConfigError, match="last ask"):
        method.tell(z + 1.0, Evaluation(losses=F(z)))
    method.tell(z, Evaluation(losses=F(z)))
    with pytest.raises(ConfigError, match="without a pending"):
        method.tell(z, Evaluation(losses=F(z)))
    assert method.recommend().shape == (DIM,)
    assert isinstance(method.stop(), dict)


@pytest.mark.parametrize("name", NAMES)
def test_seeds_are_reproducible_and_isolated(name):
    reference = make(name, seed=1)
    first = [step(reference)[0] for _ in range(4)]
    again, other = make(name, seed=1), make(name, seed=1)
    for z in first:
        np.random.seed(123)  # other code using numpy's global RNG in between
        np.random.standard_normal(17)
        step(other)  # another instance (same seed) stepped in between
        np.testing.assert_array_equal(step(again)[0], z)
    different = make(name, seed=2)  # MMES's first ask is the mean, 0: compare two asks
    z0, z1 = step(different)[0], step(different)[0]
    assert not (np.array_equal(z0, first[0]) and np.array_equal(z1, first[1]))


@pytest.mark.parametrize("name", ["bpt-vlm", "bbt", "bpt-vlm-deep"])
def test_pycma_methods_leave_the_global_rng_alone(name):
    np.random.seed(5)
    expected = np.random.standard_normal(3)
    np.random.seed(5)
    method = make(name, seed=0)
    step(method)
    method.stop()
    np.testing.assert_array_equal(np.random.standard_normal(3), expected)


def test_bpt_vlm_draws_what_pycma_seeding_draws():
    import cma

    es = cma.CMAEvolutionStrategy(np.zeros(DIM), 1.0,
                                  {"seed": 42, "popsize": 30, "verbose": -9, "verb_log": 0})
    np.testing.assert_array_equal(make("bpt-vlm", seed=42).ask(), np.array(es.ask()))


@pytest.mark.parametrize("name", NAMES)
def test_clear_improvement_and_recommend_is_the_best_seen(name):
    method = make(name, seed=1)
    assert np.array_equal(method.recommend(), np.zeros(DIM))  # the start, before any tell
    zs, ls = run(method, 300)
    z_all, l_all = np.concatenate(zs), np.concatenate(ls)
    best = int(np.argmin(l_all))
    np.testing.assert_array_equal(method.recommend(), z_all[best])
    start = F(np.zeros(DIM))[0]
    assert F(method.recommend())[0] < 0.75 * start, f"{name}: {start:.1f} -> {l_all[best]:.1f}"


@pytest.mark.parametrize("pending", [False, True], ids=["between", "mid-ask"])
@pytest.mark.parametrize("steps", [0, 3])
@pytest.mark.parametrize("name", NAMES)
def test_pickle_and_state_dict_round_trips(name, steps, pending):
    method = make(name, seed=2)
    for _ in range(steps):
        step(method)
    if pending:
        method.ask()
    clone = pickle.loads(pickle.dumps(method))
    fresh = make(name, seed=2)
    fresh.load_state_dict(pickle.loads(pickle.dumps(method.state_dict())))
    for _ in range(3):
        z = step(method)[0]
        np.testing.assert_array_equal(step(clone)[0], z)
        np.testing.assert_array_equal(step(fresh)[0], z)
    np.testing.assert_array_equal(clone.recommend(), method.recommend())
    np.testing.assert_array_equal(fresh.recommend(), method.recommend())
    assert clone.stop() == method.stop() == fresh.stop()


def test_deep_varies_one_block_and_cycles():
    method = make("bpt-vlm-deep", seed=0, popsize=10)
    for g in range(2 * len(BLOCKS) + 1):
        b = g % len(BLOCKS)
        assert method.current_block == b
        best = method.recommend()
        z = method.ask()
        inside = np.zeros(DIM, dtype=bool)
        inside[slice(*BLOCKS[b])] = True
        np.testing.assert_array_equal(z[:, ~inside], np.tile(best[~inside], (len(z), 1)))
        assert np.all(np.ptp(z[:, inside], axis=0) > 0)
        method.tell(z, Evaluation(losses=F(z)))


def test_deep_complete_rounds_only_stops_after_whole_rounds():
    method = make("bpt-vlm-deep", seed=0, popsize=6, complete_rounds_only=True)
    method.plan(10)  # 10 asks allowed: 2 complete rounds over 4 blocks
    asks = 0
    while not method.stop():
        step(method)
        asks += 1
    assert asks == 8 and method.stop() == {"complete_rounds": 2}
    partial = make("bpt-vlm-deep", seed=0, popsize=6)
    partial.plan(10)
    assert len(run(partial, 60)[0]) == 10  # by default the remainder is spent


@pytest.mark.parametrize("name", ["bpt-vlm", "bbt"])
def test_pycma_reports_its_stop_rules(name):
    method = make(name, seed=0)
    assert method.stop() == {}
    z = method.ask()
    method.tell(z, Evaluation(losses=np.ones(len(z))))  # flat fitness
    assert "tolfun" in method.stop()  # pycma's tolfun: the last values are all equal


def test_deep_stops_when_every_block_has_stopped():
    method = make("bpt-vlm-deep", seed=0, popsize=6)
    for _ in BLOCKS:
        assert method.stop() == {}
        z = method.ask()
        method.tell(z, Evaluation(losses=np.ones(len(z))))
    reasons = method.stop()
    assert {f"block{b}:tolfun" for b in range(len(BLOCKS))} <= set(reasons)


def test_bound_keeps_every_candidate_in_the_box():
    method = make("bpt-vlm", seed=0, bound=0.5)
    for _ in range(3):
        z, _ = step(method)
        assert np.all(np.abs(z) <= 0.5)


def test_mmes_first_ask_starts_with_the_initial_mean():
    method = make("bpt-vlm-mmes", seed=0)
    assert method.ask_size == 31
    z = method.ask()
    assert z.shape == (31, DIM)
    np.testing.assert_array_equal(z[0], np.zeros(DIM))
    method.tell(z, Evaluation(losses=F(z)))
    assert method.ask_size == 30 and method.ask().shape == (30, DIM)


@pytest.mark.parametrize("name", PYPOP)
def test_pypop_driver_reproduces_the_library_optimize(name):
    method_cls = REGISTRY.entry(name).method_cls
    module, cls_name = method_cls.pypop_class.split(":")
    library_cls = getattr(importlib.import_module(module), cls_name)
    seen = []

    def fitness(x):
        seen.append(np.copy(x))
        return float(F(x)[0])

    evaluations = 121 if name == "bpt-vlm-mmes" else 120  # MMES evaluates its mean first
    optimizer = library_cls(
        {"fitness_function": fitness, "ndim_problem": DIM},
        {"mean": np.zeros(DIM), "sigma": 1.0, "n_individuals": 30, "seed_rng": 4,
         "is_restart": False, "max_function_evaluations": evaluations, "verbose": 0})
    result = optimizer.optimize()
    method = make(name, seed=4)
    zs, _ = run(method, evaluations)
    np.testing.assert_array_equal(np.concatenate(zs), np.array(seen))
    assert method._opt.best_so_far_y == result["best_so_far_y"]
    assert method._opt.n_function_evaluations == evaluations
    np.testing.assert_array_equal(method.recommend(), result["best_so_far_x"])


@pytest.mark.parametrize("name", PYPOP)
def test_pypop_stop_reports_stagnation(name):
    # a flat objective: pypop7's restart rule (no improvement over `stagnation` generations)
    method = REGISTRY.create(name, {"n_individuals": 10}, SearchSpace(dim=4), 0)
    generations = 0
    while not method.stop():
        z = method.ask()
        method.tell(z, Evaluation(losses=np.ones(len(z))))
        generations += 1
    assert method.stop() and set(method.stop()) <= {"stagnation", "sigma_threshold"}
    assert generations <= method._opt.stagnation + 1


@pytest.mark.parametrize("module", [es_subspace, es_pypop])
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("name", ["bpt-vlm-lmcmaes", "bpt-vlm-mmes", "bpt-vlm-lmmaes"])
@pytest.mark.parametrize("n", [2, 3])
def test_pypop_strategies_refuse_fewer_than_four_individuals(name, n):
    # pypop7's LM variants fail with one parent (n // 2); refused up front, for all three.
    with pytest.raises(ConfigError, match="n_individuals must be an int >= 4"):
        methods.REGISTRY.make_config(name, {"n_individuals": n})


def test_bbt_dev_selection_pays_from_the_budget_and_never_touches_validation(tiny_vit, task):
    # bbt.py scores its best prompt on a dev set every 100 calls and deploys the best there;
    # here each score is one candidate evaluation of the budget, on the task's dev draw.
    import dataclasses

    from sweep.budget import BudgetSpec, QueryCounts
    from sweep.oracle import ClipOracle
    from sweep.run import run_method
    from sweep.run.runner import assemble, layout_of
    from tests.conftest import make_task

    dev_task = dataclasses.replace(task, dev=make_task(seed=9).val)  # 2 a class, 6 images
    config = methods.REGISTRY.make_config("bbt", {"popsize": 5, "dev_every": 10,
                                                  "intrinsic_dim_text": 20})
    oracle = ClipOracle(tiny_vit, dev_task, layout_of(config),
                        BudgetSpec(unit="candidate_evals", limit=42))
    run = assemble("bbt", config, oracle, seed=0)
    told = []
    original = run.method.tell_dev
    run.method.tell_dev = lambda z, acc: (told.append(acc), original(z, acc))
    result = run_method(run.method, run.objective)  # no scorer: no validation or test request
    # 7 generations of 5, a dev score after 10, 20 and 30: 38 of 42 (the 8th would pass it).
    assert len(told) == 3 and "budget" in result.stop_reasons
    assert oracle.used.candidate_evals == 7 * 5 + 3
    assert oracle.used.images == 7 * 5 * len(task.train) + 3 * len(dev_task.dev)
    assert oracle.eval_used == QueryCounts()
    assert (run.method.recommend() == run.method._best_dev[0]).all()
