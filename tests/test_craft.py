"""CraFT (methods/craft.py): its fitness from the returned logits, its head, its bounded requests,
its deploy request counted and shown fresh views, and convergence within the budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import RecordingObjective, make_task

import methods
from methods.base import SearchSpace
from methods.logit_head import candidate_logits, kl_batchmean
from sweep.budget import UNITS, BudgetSpec
from sweep.run import PromptObjective, run_method
from sweep.testing import SyntheticClipObjective

DIM, POP = 10, 8


def make(budget: int | None = None, unit: str = "candidate_evals", seed: int = 1, **params):
    config = methods.REGISTRY.make_config("craft", {"popsize": POP, "sigma0": 0.5, **params})
    method = methods.REGISTRY.create("craft", config, SearchSpace(DIM), seed=seed)
    limit = None if budget is None else SyntheticClipObjective(DIM).cost(budget)[unit]
    return method, SyntheticClipObjective(DIM, BudgetSpec(unit=unit, limit=limit), seed=3)


def told_fitness(method) -> list[np.ndarray]:
    """Record what CraFT tells pycma, generation by generation."""
    told, tell = [], method.cma.tell
    method.cma.tell = lambda population, losses: (told.append(np.array(losses)),
                                                  tell(population, losses))[-1]
    return told


@pytest.mark.parametrize("unit", UNITS)
def test_a_generation_is_the_population_and_the_deployed_prompt_on_fresh_views(unit):
    method, objective = make(12 * (POP + 1) + 5, unit)
    recording = RecordingObjective(objective)
    result = run_method(method, recording)
    sizes = [len(z) for z, _, _ in recording.requests]
    fresh = [kwargs.get("fresh_views", False) for _, kwargs, _ in recording.requests]
    assert sizes == [POP, 1] * 12 and fresh == [False, True] * 12
    assert all(kwargs["features"] for _, kwargs, _ in recording.requests)
    # the deployed prompt, asked after each tell, is what the run deploys: not a scored point
    # but the mean of a fresh population
    np.testing.assert_array_equal(recording.requests[-1][0][0], method.recommend())
    assert not any((recording.requests[-2][0] == method.recommend()).all(axis=1))
    assert objective.used == objective.cost(12 * (POP + 1)) and method.generations == 12
    assert "generation_budget" in result.stop_reasons  # 5 left: no generation started


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_the_fitness_is_the_black_boxs_loss_plus_w_times_the_heads_kl(weight):
    method, objective = make(weight=weight)
    told = told_fitness(method)
    z = method.ask()
    ev = objective(z, features=True)
    method.tell(z, ev)
    head = method.head  # untrained until the deployed prompt's pass
    _, raw = next(candidate_logits(ev.image_features, ev.text_features, ev.logit_scale, 10**9))
    with torch.no_grad():
        kl = kl_batchmean(raw, head(raw)).double().numpy()
    assert (kl > 0).all()  # with w = 0 the fitness is the loss the black box returned
    np.testing.assert_allclose(told[0], ev.losses + weight * kl, rtol=1e-5)


def test_the_heads_kl_is_on_for_the_first_fraction_of_the_budget():
    method, objective = make(kl_fraction=0.25)
    method.plan(45)  # as the loop plans: 45 asks of 8, 360 candidates
    weights = []
    for _ in range(2 * 40):
        if method.deploying:
            weights.append(method.head_weight)
        z = method.ask()
        method.tell(z, objective(z, features=True, fresh_views=method.fresh_views))
    # planned 40 x 9 = 360 candidates: the KL is on while at most 90 are scored (11 x 8)
    assert weights == [0.1] * 11 + [0.0] * 29


def test_chunked_requests_are_bounded_and_change_nothing():
    # The synthetic task: 5 classes x 16 images, width 16. A reply is k x 5 x 16 text floats
    # and the 80 x 16 image features: a bound of 1,280 + 3 x 80 floats holds 3 candidates.
    runs = {}
    for bound in (1 << 25, 80 * 16 + 3 * 80):
        method, objective = make(6 * (POP + 1), max_request_floats=bound)
        recording = RecordingObjective(objective)
        told = told_fitness(method)
        result = run_method(method, recording)
        runs[bound] = (result.recommendation, objective.used, told, recording.requests)
    whole, chunked = runs.values()
    np.testing.assert_array_equal(whole[0], chunked[0])
    assert whole[1] == chunked[1]
    np.testing.assert_allclose(np.concatenate(whole[2]), np.concatenate(chunked[2]), rtol=1e-6)
    sizes = [len(z) for z, _, _ in chunked[3]]
    assert sizes[:4] == [POP, 1, 3, 3] and max(sizes[2:]) == 3  # the first reply tells the sizes
    floats = [ev.text_features.size + ev.image_features.size for _, _, ev in chunked[3]]
    assert max(floats[2:]) <= 80 * 16 + 3 * 80


def test_converges_on_a_clip_shaped_objective_within_its_budget():
    method, objective = make(60 * (POP + 1), sigma0=0.3)
    result = run_method(method, objective)
    free = SyntheticClipObjective(DIM, seed=3)
    start = free(np.zeros((1, DIM)), features=True)
    end = free(result.recommendation[None], features=True)
    # the prompt alone: most of the way to this objective's floor (2.72; from 3.37)
    assert end.losses[0] < 0.85 * start.losses[0]
    assert objective.used.candidate_evals <= 60 * (POP + 1)
    # the deployed model, prompt and head, classifies far better than the start (37.5%)
    accuracy = (method.predict(end).argmax(axis=1) == end.labels).mean()
    assert accuracy > start.accuracies[0] + 0.2


def test_the_oracles_features_give_its_logits_and_fixed_views_repeat(tiny_vit):
    from sweep.oracle import ClipOracle
    from sweep.run.runner import layout_of

    task = make_task(num_classes=3, shots=8, seed=2)
    config = methods.REGISTRY.make_config("craft", {"intrinsic_dim_text": 16})
    oracle = ClipOracle(tiny_vit, task, layout_of(config))
    objective = PromptObjective(oracle, config, seed=4)
    z = np.random.default_rng(0).normal(size=(3, 16))
    first = objective(z, features=True)
    again = objective(z, features=True)  # the run's views: the same images again
    fresh = objective(z[:1], features=True, fresh_views=True)
    np.testing.assert_array_equal(first.losses, again.losses)
    assert abs(fresh.losses[0] - first.losses[0]) > 1e-4  # a view of its own
    # scale x cosine of the returned features: the oracle's own logits, loss and accuracy
    _, logits = next(candidate_logits(first.image_features, first.text_features,
                                      first.logit_scale, 10**9))
    y = torch.as_tensor(first.labels)
    ce = [float(torch.nn.functional.cross_entropy(row, y)) for row in logits]
    np.testing.assert_allclose(ce, first.losses, atol=1e-5)
    np.testing.assert_allclose((logits.argmax(-1) == y).float().mean(1), first.accuracies)
    # each request counted in every unit as a plain one is; a restored objective keeps the views
    assert objective.used == oracle.meter.cost(7)
    restored = PromptObjective(ClipOracle(tiny_vit, task, layout_of(config)), config, seed=4)
    restored.restore(objective.state())
    np.testing.assert_array_equal(restored(z, features=True).losses, first.losses)
