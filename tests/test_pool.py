"""The oracle pool on Ray: same answers and counts as a local oracle, split in order, survives actor loss."""

from __future__ import annotations

import numpy as np
import pytest

from sweep.budget import BudgetSpec, QueryCounts
from sweep.errors import BudgetExceededError, ModelError
from sweep.oracle import ClipOracle, OraclePool, PromptLayout, TaskKey
from sweep.spec import ModelSpec

pytestmark = [pytest.mark.ray, pytest.mark.slow]

KEY = TaskKey("digits", None, 4, 1)
LAYOUT = PromptLayout(n_text=2, n_visual=2)


@pytest.fixture(scope="module")
def spec(tiny_configs, tiny_vit, tmp_path_factory) -> ModelSpec:
    # A checkpoint, so that the actors and the local oracle hold the same weights.
    import torch

    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    torch.save(tiny_vit.model.state_dict(), path)
    return ModelSpec(name="test-tiny-vit", config=tiny_configs["test-tiny-vit"], checkpoint=str(path))


@pytest.fixture(scope="module")
def pool(ray_session, spec):
    p = OraclePool(spec, actors=2, threads_per_actor=1)
    yield p
    p.shutdown()


@pytest.fixture(scope="module")
def local(spec):
    from sweep.data import few_shot, load_dataset
    from sweep.oracle import load_model

    return ClipOracle(load_model(spec, "cpu"), few_shot(load_dataset("digits"), 4, 1), LAYOUT)


def _prompts(oracle, n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 0.05, (n, *oracle.text_shape)).astype(np.float32),
            rng.normal(0, 0.5, (n, *oracle.visual_shape)).astype(np.float32))


def test_pooled_answers_equal_local_ones_in_order(pool, local):
    pooled = pool.oracle(KEY, LAYOUT)
    text, visual = _prompts(local, 5)
    a = pooled.evaluate(text=text, visual=visual, features=True)
    b = local.evaluate(text=text, visual=visual, features=True)
    np.testing.assert_allclose(a.losses, b.losses, atol=1e-5)
    np.testing.assert_allclose(a.text_features, b.text_features, atol=1e-5)
    np.testing.assert_allclose(a.image_features, b.image_features, atol=1e-5)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert pooled.used == QueryCounts.of_request(5, local.train_size, local.num_classes, 128)


def test_pool_interface_matches_the_local_oracle(pool, local):
    pooled = pool.oracle(KEY, LAYOUT)
    assert pooled.text_shape == local.text_shape and pooled.visual_shape == local.visual_shape
    assert pooled.train_size == local.train_size and pooled.num_classes == local.num_classes
    np.testing.assert_array_equal(pooled.initial_text(), local.initial_text())
    for name, value in local.model_stats().items():
        np.testing.assert_allclose(pooled.model_stats()[name], value, rtol=1e-6)
    with pytest.raises(ModelError, match="visual prompts are required"):  # checked here
        pooled.gradient(text=local.initial_text()[None])
    assert pooled.used.candidate_evals == 0


def test_budget_is_checked_before_dispatch(pool, local):
    per = QueryCounts.of_request(1, local.train_size, local.num_classes, 128).images
    pooled = pool.oracle(KEY, LAYOUT, BudgetSpec(unit="images", limit=3 * per))
    text, visual = _prompts(local, 4)
    with pytest.raises(BudgetExceededError):
        pooled.evaluate(text=text, visual=visual)
    assert pooled.used == QueryCounts()
    pooled.evaluate(text=text[:3], visual=visual[:3])
    assert pooled.used.images == 3 * per and pooled.remaining() == 0
    val = pooled.evaluate_split("val", text=text, visual=visual)  # never against the budget
    assert val.losses.shape == (4,) and pooled.used.images == 3 * per


def test_an_actor_that_dies_is_replaced_and_its_work_resubmitted(pool, local):
    import ray

    pooled = pool.oracle(KEY, LAYOUT)
    text, visual = _prompts(local, 4, seed=3)
    expected = local.evaluate(text=text, visual=visual).losses
    before = ray.get(pool.actors[1].pid.remote())
    ray.kill(pool.actors[1], no_restart=False)  # Ray restarts it; the request is retried
    got = pooled.evaluate(text=text, visual=visual).losses
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert ray.get(pool.actors[1].pid.remote()) != before
    assert pooled.used.candidate_evals == 4  # counted once, whatever the retries


def test_actors_report_what_they_hold_on_their_device(pool, local):
    import ray

    pooled = pool.oracle(KEY, LAYOUT)
    text, visual = _prompts(local, 2)
    pooled.evaluate(text=text, visual=visual)
    pooled.evaluate_split("test", text=text[:1], visual=visual[:1])
    for report in ray.get([a.memory.remote() for a in pool.actors]):
        assert report["budget"] == 2 << 30  # the CPU's default
        # Patch embeddings of the training and test images (visual prompts), within budget.
        assert 0 < report["patch_embeddings"] <= report["budget"]


def _requests(pool) -> list[int]:
    import ray

    return [m["requests"] for m in ray.get([a.memory.remote() for a in pool.actors])]


def test_small_requests_and_the_evaluation_channel_spread_over_the_actors(pool, local):
    before = _requests(pool)
    text, visual = _prompts(local, 1)
    for seed in range(4):  # four trials' oracles, each with its own first actor
        pooled = pool.oracle(TaskKey("digits", None, 4, seed), LAYOUT)
        pooled.evaluate(text=text, visual=visual)
        pooled.evaluate_split("val", text=text, visual=visual)
        pooled.evaluate_split("test", text=text, visual=visual)
    served = [after - b for after, b in zip(_requests(pool), before)]
    # 4 x (info + 3 single-candidate requests), none split: each went whole to one actor.
    assert sum(served) == 16 and min(served) >= 4, served


def test_a_task_served_by_one_actor_is_cached_on_it_alone(ray_session, spec):
    import ray

    pool = OraclePool(spec, actors=2, threads_per_actor=1, actors_per_task=1)
    try:
        keys = [TaskKey("digits", None, 4, seed) for seed in (1, 2, 3)]
        for key in keys:
            pooled = pool.oracle(key, LAYOUT)
            text, visual = _prompts(pooled, 6)  # large enough to be split, were it allowed
            pooled.evaluate(text=text, visual=visual)
        served = [m["requests"] for m in ray.get([a.memory.remote() for a in pool.actors])]
        # each task (info + one request) on its own actor: 2 requests per task
        assert sorted(served) == sorted(2 * [pool.slots(k)[0] for k in keys].count(s)
                                        for s in range(2))
    finally:
        pool.shutdown()


def test_a_single_request_goes_to_the_less_loaded_of_its_two_actors(pool, local):
    pooled = pool.oracle(TaskKey("digits", None, 4, 7), LAYOUT)
    text, visual = _prompts(local, 1)
    for busy in (0, 1):
        first, second = pooled._slots[pooled._turn % 2], pooled._slots[(pooled._turn + 1) % 2]
        pool.loads[first], pool.loads[second] = (10**6, 0) if busy == 0 else (0, 10**6)
        before = _requests(pool)
        pooled.evaluate(text=text, visual=visual)
        served = [after - b for after, b in zip(_requests(pool), before)]
        idle = second if busy == 0 else first
        assert served[idle] == 1 and sum(served) == 1, (busy, served)
        assert pool.loads[idle] == 0  # the actor's own figure replaced the guess on reply


def test_a_large_evaluation_with_visual_prompts_is_split_by_images(pool, local, monkeypatch):
    from sweep.errors import ConfigError

    test_size = len(local.task.test)
    piece = test_size // 3
    pieces = -(-test_size // piece)
    monkeypatch.setattr(pool, "image_piece", piece)  # read where requests are cut: here
    text, visual = _prompts(local, 2, seed=5)
    expected = local.evaluate_split("test", text=text, visual=visual, features=True)
    answers = []
    for turn in (0, 1):  # the pieces served by other actors
        pooled = pool.oracle(KEY, LAYOUT)
        pooled._turn = turn
        before = _requests(pool)
        answers.append(pooled.evaluate_split("test", text=text, visual=visual, features=True))
        served = [after - b for after, b in zip(_requests(pool), before)]
        assert sum(served) == pieces >= 3 and min(served) >= 1, served  # over the actors
    for got in answers:
        np.testing.assert_allclose(got.losses, expected.losses, rtol=1e-6)
        np.testing.assert_allclose(got.accuracies, expected.accuracies, atol=1e-7)
        np.testing.assert_allclose(got.image_features, expected.image_features, atol=1e-6)
        np.testing.assert_array_equal(got.labels, expected.labels)
    # The pieces are the request's: whichever actor serves which, the same bits.
    np.testing.assert_array_equal(answers[0].losses, answers[1].losses)
    np.testing.assert_array_equal(answers[0].accuracies, answers[1].accuracies)
    with pytest.raises(ConfigError, match="range"):
        local.evaluate_split("test", text=text, visual=visual, images=(5, test_size + 1))


def test_augmented_views_are_the_same_whichever_actors_serve_them(pool, local):
    from sweep.run.views import RECIPES

    pooled = pool.oracle(KEY, LAYOUT)
    text, visual = _prompts(local, 6)  # split over both actors
    subset = np.arange(0, local.train_size, 3)
    views = RECIPES["cbbt"](np.random.default_rng(5), len(subset))  # crops and cutouts
    a = pooled.evaluate(text=text, visual=visual, subset=subset, views=views, features=True)
    assert pooled.used.images == 6 * len(subset)  # a view is counted as its image
    single = [pooled.evaluate(text=text[i:i + 1], visual=visual[i:i + 1], subset=subset,
                              views=views) for i in range(2)]  # one actor each, whole
    b = local.evaluate(text=text, visual=visual, subset=subset, views=views, features=True)
    np.testing.assert_allclose(a.losses, b.losses, atol=1e-5)
    np.testing.assert_allclose([s.losses[0] for s in single], b.losses[:2], atol=1e-5)
    np.testing.assert_allclose(a.image_features, b.image_features, atol=1e-5)
    plain = local.evaluate(text=text, visual=visual, subset=subset)
    assert np.abs(plain.losses - b.losses).max() > 1e-3  # the views are not the images


def test_white_box_methods_get_true_gradients_through_the_pool(pool, local):
    pooled = pool.oracle(KEY, LAYOUT)
    glass = ClipOracle(local.model, local.task, LAYOUT, glass_box=True)
    text, visual = _prompts(local, 2)
    subset = np.arange(0, local.train_size, 2)
    a = pooled.gradient(text=text, visual=visual, subset=subset)
    b = glass.gradient(text=text, visual=visual, subset=subset)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=1e-5)
    assert np.abs(a[1]).max() > 0 and pooled.used.images == 2 * len(subset)


def test_per_image_logits_from_pooled_features_equal_the_local_oracles(pool, local):
    # CraFT's view of the black box: text-only candidates, their features on one fixed set of
    # views; the per-image logits it forms are the local oracle's to 1e-5, counted alike.
    from methods.logit_head import candidate_logits
    from sweep.run.views import RECIPES

    layout = PromptLayout(n_text=4, text_init="a photo of a")
    here = ClipOracle(local.model, local.task, layout)
    pooled = pool.oracle(KEY, layout)
    rng = np.random.default_rng(3)
    text = (here.initial_text() + rng.normal(0, 0.05, (6, *here.text_shape))).astype(np.float32)
    views = RECIPES["craft"](np.random.default_rng(5), here.train_size)
    a = pooled.evaluate(text=text, features=True, views=views)
    b = here.evaluate(text=text, features=True, views=views)
    logits = [np.concatenate([chunk.numpy() for _, chunk in candidate_logits(
        ev.image_features, ev.text_features, ev.logit_scale, 1 << 12)]) for ev in (a, b)]
    assert logits[0].shape == (6, here.train_size, here.num_classes)
    np.testing.assert_allclose(logits[0], logits[1], atol=1e-5)
    assert pooled.used == here.used == QueryCounts.of_request(6, here.train_size,
                                                                here.num_classes, 128)
