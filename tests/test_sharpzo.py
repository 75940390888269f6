"""SharpZO (methods/sharpzo.py): its probes and stages counted in the budget, its SAM ascent,
its gradient sum, and convergence on a quadratic within the budget."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import RecordingObjective

import methods
from methods.base import Evaluation, SearchSpace
from sweep.budget import UNITS, BudgetSpec
from sweep.run import run_method
from sweep.testing import QuadraticObjective

DIM, POP = 12, 8


def make(budget: int | None = None, unit: str = "candidate_evals", **params):
    config = methods.REGISTRY.make_config("sharpzo", {"popsize": POP, "sigma0": 0.3, **params})
    method = methods.REGISTRY.create("sharpzo", config, SearchSpace(DIM), seed=1)
    limit = None if budget is None else QuadraticObjective(DIM).cost(budget)[unit]
    return method, QuadraticObjective(DIM, BudgetSpec(unit=unit, limit=limit), seed=2)


@pytest.mark.parametrize("unit", UNITS)
def test_every_probe_and_candidate_is_counted_and_stage1_takes_its_share(unit):
    # Budget: 40 generations' worth; stage 1 takes 0.21 of it, in whole generations.
    generation = 2 * DIM + POP
    method, objective = make(40 * generation, unit)
    recording = RecordingObjective(objective)
    result = run_method(method, recording)
    sizes = [len(z) for z, _, _ in recording.requests]
    planned = 40 * generation // (2 * DIM) * (2 * DIM)  # the loop plans in asks of probes
    stage1 = int(0.21 * planned) // generation  # 8 generations
    assert sizes[:2 * stage1] == [2 * DIM, POP] * stage1 and set(sizes[2 * stage1:]) == {2}
    assert method.cma.generations == stage1 and method.stage == 2
    # Every request on the whole training set, each point one candidate: all four units.
    assert objective.used == objective.cost(sum(sizes))
    assert objective.used[unit] <= objective.budget.limit and "budget" in result.stop_reasons
    assert objective.budget.limit - objective.used[unit] < objective.cost(2)[unit]


def test_change_point_counts_generations_and_a_small_budget_still_gets_one():
    method, objective = make(200, change_point=3)
    run_method(method, objective)
    assert method.cma.generations == 3
    method, objective = make(2 * DIM + POP + 10)  # 0.21 of it pays for no generation
    run_method(method, objective)
    assert method.cma.generations == 1 and method.stage == 2


@pytest.mark.parametrize("radius, norm", [("release", 0.1 / math.sqrt(POP)), ("rho", 0.1)])
def test_the_population_is_scored_at_the_sam_ascent_of_the_probe_gradient(radius, norm):
    method, objective = make(sam_radius=radius)
    z = method.ask()  # the probes: 2 x DIM central differences at the deployed prompt p0
    method.tell(z, objective(z))
    gradient = -objective.z_star * objective.h  # the quadratic's gradient at 0: exact here
    np.testing.assert_allclose(method.probe_gradient, gradient, rtol=1e-6)
    np.testing.assert_allclose(method.eps, norm * gradient / np.linalg.norm(gradient), rtol=1e-6)
    z = method.ask()  # the population, scored at z + eps...
    np.testing.assert_allclose(z - method.population, np.tile(method.eps, (POP, 1)), atol=1e-12)
    method.tell(z, objective(z))  # ... and pycma told the points z: its mean has moved
    assert method.cma.generations == 1 and not np.allclose(method.recommend(), 0)


@pytest.mark.parametrize("mode", ["reset", "running"])
def test_stage2_steps_by_its_own_estimate_or_the_releases_running_sum(mode):
    method, objective = make(change_point=1, gradient_sum=mode, lr=0.01, mu=1e-3)
    for _ in range(2):  # one generation: probes and population
        z = method.ask()
        method.tell(z, objective(z))
    total = method.probe_gradient.copy()
    for _ in range(5):
        x = method.recommend()
        z = method.ask()
        ev = objective(z)
        method.tell(z, ev)
        u = (z[0] - x) / 1e-3
        g = (ev.losses[0] - ev.losses[1]) / 2e-3 * u  # MeZO's estimate, q = 1
        total = total + g
        expected = g if mode == "reset" else total
        np.testing.assert_allclose(x - method.recommend(), 0.01 * expected, rtol=1e-6, atol=1e-12)


def test_the_releases_first_probes_sit_at_a_uniform_populations_mean():
    method, _ = make(initial_probe="uniform")
    probes = method.ask()
    centre = (probes[:DIM] + probes[DIM:]) / 2
    assert np.allclose(centre, centre[0]) and 0.3 < centre[0].mean() < 0.7


def test_converges_on_a_quadratic_within_its_budget():
    method, objective = make(3000, lr=0.02)
    result = run_method(method, objective)
    start = float(QuadraticObjective(DIM, seed=2)(np.zeros((1, DIM))).losses[0])
    end = float(QuadraticObjective(DIM, seed=2)(result.recommendation[None]).losses[0])
    assert end < 0.01 * start and objective.used.candidate_evals <= 3000


def test_a_checkpoint_in_the_middle_of_a_generation_goes_on_identically():
    method, objective = make(change_point=2)
    z = method.ask()
    method.tell(z, objective(z))  # probes told, population pending
    clone = methods.REGISTRY.create("sharpzo", method.config, method.space, 1)
    clone.load_state_dict(method.state_dict())
    for m in (method, clone):
        for _ in range(4):
            z = m.ask()
            m.tell(z, Evaluation(losses=QuadraticObjective(DIM, seed=2).value(z)))
    np.testing.assert_array_equal(method.recommend(), clone.recommend())
    assert method.stage == clone.stage == 2
