"""Zeroth-order methods, CBBT and the baselines on numpy quadratics and synthetic features."""

from __future__ import annotations

import dataclasses
import math
import pickle

import numpy as np
import pytest

import methods
from methods import cbbt, references, spsa_methods, zeroth_order, zo_adapter
from methods.base import Evaluation, SearchSpace
from methods.errors import ConfigError
from methods.estimators import ESTIMATORS
from methods.registry import Registry
from methods.zeroth_order import UpdateRule, ZerothOrderConfig
from methods.zo_adapter import CBBTAdapter, GrowingAdamW


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """CBBT's adapter works on tiny tensors: thread hand-offs on a busy 2-core machine cost 15x."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def registry() -> Registry:
    modules = {m.__name__ for m in (zeroth_order, cbbt, zo_adapter, spsa_methods, references)}
    return Registry(spec for spec in methods.METHODS if spec.module in modules)


# --------------------------------------------------------------------------- objectives


class Quadratic:
    """f(z) = 0.5 sum_j h_j (z_j - t_j)^2, h in scale * [0.5, 2], |t| = radius; true gradients."""

    def __init__(self, dim: int, radius: float = 1.0, scale: float = 1.0, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.h = scale * rng.uniform(0.5, 2.0, dim)
        t = rng.normal(size=dim)
        self.t = radius * t / np.linalg.norm(t)

    def value(self, z: np.ndarray) -> np.ndarray:
        return 0.5 * ((z - self.t) ** 2 * self.h).sum(axis=-1)

    def __call__(self, z: np.ndarray, batch=None) -> Evaluation:
        return Evaluation(losses=self.value(z), gradients=(z - self.t) * self.h)


class Features:
    """A synthetic black box with features: 3 classes of two Gaussian clusters each in R^16.

    The class text features are slightly wrong, and the prompt z moves them
    linearly before normalisation, t_c(z) = normalize(t0_c + B_c z).
    """

    def __init__(self, dim: int = 24, seed: int = 0, per_class: int = 40,
                 wrong: float = 0.9) -> None:
        rng = np.random.default_rng(seed)
        self.classes, width = 3, 16
        centres = rng.normal(size=(self.classes, 2, width))
        labels = np.repeat(np.arange(self.classes), per_class)
        which = rng.integers(0, 2, size=len(labels))
        img = centres[labels, which] + 0.6 * rng.normal(size=(len(labels), width))
        self.images = (img / np.linalg.norm(img, axis=1, keepdims=True)).astype(np.float32)
        self.labels = labels
        means = centres.mean(axis=1)
        means /= np.linalg.norm(means, axis=1, keepdims=True)
        self.t0 = means + wrong * rng.normal(size=means.shape) / np.sqrt(width)
        self.B = 0.5 * rng.normal(size=(self.classes, width, dim)) / np.sqrt(dim)
        self.scale = 20.0
        self.rng = np.random.default_rng(seed + 1)

    def text(self, z: np.ndarray) -> np.ndarray:
        t = self.t0[None] + np.einsum("cwd,nd->ncw", self.B, z)
        return (t / np.linalg.norm(t, axis=-1, keepdims=True)).astype(np.float32)

    def __call__(self, z: np.ndarray, batch: int | None = None) -> Evaluation:
        n = len(self.labels)
        idx = np.arange(n) if batch is None else self.rng.choice(
            n, size=min(batch, n), replace=False)
        txt, img, labels = self.text(z), self.images[idx], self.labels[idx]
        logits = self.scale * np.einsum("md,ncd->nmc", img.astype(float), txt.astype(float))
        logits -= logits.max(axis=-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
        losses = -logp[:, np.arange(len(idx)), labels].mean(axis=1)
        acc = (logits.argmax(axis=-1) == labels).mean(axis=1)
        return Evaluation(losses=losses, accuracies=acc, text_features=txt,
                          image_features=img[None], labels=labels, logit_scale=self.scale)

    def accuracy(self, logits: np.ndarray) -> float:
        return float((logits.argmax(axis=-1) == self.labels).mean())


def run(method, objective, asks: int, plan: bool = True) -> list[np.ndarray]:
    """The caller's loop: plan, then ask/evaluate/tell until stop() or ``asks`` asks."""
    if plan:
        method.plan(asks)
    asked = []
    for _ in range(asks):
        if method.stop():
            break
        z = method.ask()
        asked.append(z)
        method.tell(z, objective(z, method.minibatch))
    return asked


# --------------------------------------------------------------------------- progress


QUADRATIC_CASES = {
    # name: (overrides, dim, asks, objective kwargs)
    "zo": ({"lr": 0.02}, 100, 150, {}),
    "zo-cbbt-optimiser": ({"estimator": "sphere", "q": 64, "lr": 0.02, "weight_decay": 5e-4,
                           "clip_norm": 5.0}, 200, 100, {}),
    "zip": ({}, 200, 300, {}),
    "blackvip-tokens": ({}, 200, 300, {}),
    "coop": ({}, 300, 100, {}),
}


@pytest.mark.parametrize("case", sorted(QUADRATIC_CASES))
def test_each_method_improves_on_a_quadratic(registry, case):
    overrides, dim, asks, kwargs = QUADRATIC_CASES[case]
    name = case.split("-")[0] if case.startswith("zo-") else case
    objective = Quadratic(dim, **kwargs)
    method = registry.create(name, overrides, SearchSpace(dim), seed=1)
    run(method, objective, asks)
    start = objective.value(np.zeros(dim))
    assert objective.value(method.recommend()) < 0.5 * start


@pytest.mark.parametrize("name, gain", [("cbbt-adapter", 0.1), ("cbbt-tip", 0.2)])
def test_cbbt_adapter_and_prompt_raise_the_local_accuracy(registry, name, gain):
    accuracies = {}
    for adapter_steps in (1, 0):  # published (one adapter step per prompt step), prompt alone
        task = Features(seed=1)
        overrides = {"q": 32, "adapter_steps": adapter_steps}
        method = registry.create(name, overrides, SearchSpace(24), seed=0)
        before = task.accuracy(method.predict(task(np.zeros((1, 24)))))
        run(method, task, 150)
        accuracies[adapter_steps] = task.accuracy(method.predict(task(method.recommend()[None])))
        assert np.abs(method.recommend()).max() > 0  # the prompt moved
    assert accuracies[1] >= before + gain, (before, accuracies)
    assert accuracies[1] > accuracies[0], accuracies  # the trained adapter adds to the prompt


def test_cbbt_predict_uses_the_adapter(registry):
    task = Features()
    method = registry.create("cbbt-adapter", {"q": 8}, SearchSpace(24), seed=0)
    run(method, task, 5)
    ev = task(method.recommend()[None])
    plain = ev.logit_scale * ev.image_features[0] @ ev.text_features[0].T
    adapted = method.adapter(torch_tensor(ev.image_features[0])).detach().numpy()
    adapted /= np.linalg.norm(adapted, axis=1, keepdims=True)
    expected = ev.logit_scale * adapted @ ev.text_features[0].T
    logits = method.predict(ev)
    assert logits.shape == (len(task.labels), task.classes)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    assert np.abs(logits - plain).max() > 1e-3


def torch_tensor(a):
    import torch

    return torch.as_tensor(np.asarray(a, dtype=np.float32))


def test_cbbt_local_losses_drive_the_estimate(registry):
    """Before any adapter step the local loss of the centre equals the black box's own loss."""
    task = Features()
    method = registry.create("cbbt-adapter", {"q": 4, "adapter_start": 0.5}, SearchSpace(24),
                             seed=0)
    method.plan(10)
    z = method.ask()
    ev = task(z, 32)
    method.tell(z, ev)
    assert method.last_local_loss == pytest.approx(ev.losses[0], rel=1e-5)
    assert method.adapter is not None and not method.optimizer.state  # built, not yet trained


def test_cbbt_without_features_raises(registry):
    method = registry.create("cbbt-adapter", {"q": 4}, SearchSpace(24), seed=0)
    z = method.ask()
    with pytest.raises(ConfigError, match="features"):
        method.tell(z, Evaluation(losses=np.zeros(len(z))))
    assert CBBTAdapter.needs_features


@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_cbbt_estimator_is_switchable(registry, estimator):
    task = Features()
    method = registry.create("cbbt-adapter", {"estimator": estimator, "q": 4}, SearchSpace(24),
                             seed=0)
    assert method.ask_size == method.estimator.queries_per_step
    run(method, task, 4)
    assert method.steps == 4 and np.isfinite(method.recommend()).all()


def test_cbbt_tip_cache_holds_distinct_seen_features(registry):
    task = Features(per_class=10)
    method = registry.create("cbbt-tip", {"q": 4}, SearchSpace(24), seed=0)
    run(method, task, 20)
    assert method.cache.built
    assert len(method.cache) == len(np.unique(task.images, axis=0))
    assert method.cache.values.sum(dim=0).tolist() == [10.0, 10.0, 10.0]


def test_cbbt_tip_cache_keys_are_each_images_mean_view_until_the_adapter_starts(registry):
    """CBBT's cache (Tip-Adapter's build_cache_model): one key per training image, the
    normalised mean of its augmented views' features, built once when the adapter starts."""
    task = Features(per_class=10)
    rng = np.random.default_rng(3)
    seen: dict[int, list[np.ndarray]] = {}

    def views(z, batch):  # noisy views of a mini-batch, with the images' indices
        idx = np.sort(rng.choice(len(task.labels), size=8, replace=False))
        img = task.images[idx] + 0.05 * rng.normal(size=(8, task.images.shape[1]))
        img = (img / np.linalg.norm(img, axis=1, keepdims=True)).astype(np.float32)
        ev = task(z)
        if not method.adapter_active:
            for i, row in zip(idx, img):
                seen.setdefault(int(i), []).append(row)
        return dataclasses.replace(ev, image_features=img[None], labels=task.labels[idx],
                                   indices=idx)

    # no adapter step: the keys stay as built
    method = registry.create("cbbt-tip", {"q": 4, "adapter_steps": 0}, SearchSpace(24), seed=0)
    method.plan(150)  # the cache fills over the first 10 steps, and is built at the 11th
    for _ in range(11):
        z = method.ask()
        method.tell(z, views(z, method.minibatch))
    assert method.cache.built and len(method.cache) == len(seen)
    expected = np.stack([np.mean(seen[i], axis=0) for i in seen])  # first-seen order
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_array_equal(method.cache.values.argmax(dim=1).numpy(),
                                  task.labels[list(seen)])
    np.testing.assert_allclose(method.cache.keys.detach().numpy(), expected, atol=1e-6)


# --------------------------------------------------------------------------- determinism and state


ROUND_TRIP_CASES = {
    "zo": ({"estimator": "prgf", "q": 6}, Quadratic(30)),
    "zip": ({}, Quadratic(30)),
    "blackvip-tokens": ({}, Quadratic(30)),
    "coop": ({}, Quadratic(30)),
    "cbbt": ({"q": 6}, Quadratic(30)),
    "cbbt-adapter": ({"q": 6}, Features(dim=30)),
    "cbbt-tip": ({"q": 6, "adapter_start": 0.0}, Features(dim=30)),
}


def fresh(registry, name, dim=30, seed=3):
    overrides, objective = ROUND_TRIP_CASES[name]
    objective = pickle.loads(pickle.dumps(objective))  # its own mini-batch stream
    return registry.create(name, overrides, SearchSpace(dim), seed=seed), objective


@pytest.mark.parametrize("name", sorted(ROUND_TRIP_CASES))
def test_same_seed_same_run_other_seed_other_run(registry, name):
    a, obj_a = fresh(registry, name)
    b, obj_b = fresh(registry, name)
    c, obj_c = fresh(registry, name, seed=4)
    runs = [run(m, o, 6) for m, o in ((a, obj_a), (b, obj_b), (c, obj_c))]
    assert all(np.array_equal(x, y) for x, y in zip(runs[0], runs[1]))
    np.testing.assert_array_equal(a.recommend(), b.recommend())
    if name != "coop":  # CoOp has no randomness of its own
        assert not np.array_equal(a.recommend(), c.recommend())


@pytest.mark.parametrize("name", sorted(ROUND_TRIP_CASES))
@pytest.mark.parametrize("between", ["steps", "ask_and_tell"])
def test_pickle_and_state_dict_continue_exactly(registry, name, between):
    method, objective = fresh(registry, name)
    run(method, objective, 4)
    pending = method.ask() if between == "ask_and_tell" else None
    copy_pickled = pickle.loads(pickle.dumps(method))
    copy_loaded, _ = fresh(registry, name, seed=99)  # another seed: the state must carry the RNG
    copy_loaded.load_state_dict(pickle.loads(pickle.dumps(method.state_dict())))
    for other in (copy_pickled, copy_loaded):
        obj = pickle.loads(pickle.dumps(objective))
        if pending is not None:
            np.testing.assert_array_equal(other.ask(), pending)
        z_self, z_other = method.ask(), other.ask()
        np.testing.assert_array_equal(z_self, z_other)
    # Continue all three on identical mini-batch streams: identical trajectories.
    trajectories = []
    for m in (method, copy_pickled, copy_loaded):
        obj = pickle.loads(pickle.dumps(objective))
        for _ in range(3):
            z = m.ask()
            m.tell(z, obj(z, m.minibatch))
        trajectories.append(m.recommend())
        if isinstance(m, CBBTAdapter):
            ev = obj(m.recommend()[None])
            trajectories.append(m.predict(ev))
    n = len(trajectories) // 3
    for i in range(n):
        np.testing.assert_array_equal(trajectories[i], trajectories[n + i])
        np.testing.assert_array_equal(trajectories[i], trajectories[2 * n + i])


# --------------------------------------------------------------------------- sizes and schedule


@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_ask_size_is_the_estimator_cost(registry, estimator):
    method = registry.create("zo", {"estimator": estimator, "q": 5}, SearchSpace(12), seed=0)
    z = method.ask()
    assert z.shape == (method.ask_size, 12) == (method.estimator.queries_per_step, 12)
    method.tell(z, Quadratic(12)(z))


def test_published_costs_and_minibatches(registry):
    space = SearchSpace(512)
    sizes = {name: registry.create(name, {}, space, seed=0) for name in
             ("cbbt", "cbbt-adapter", "cbbt-tip", "zip", "blackvip-tokens", "coop",
              "zero-shot")}
    assert {k: m.ask_size for k, m in sizes.items()} == {
        "cbbt": 257, "cbbt-adapter": 257, "cbbt-tip": 257, "zip": 10, "blackvip-tokens": 10,
        "coop": 1, "zero-shot": 0}
    assert {k: m.minibatch for k, m in sizes.items() if k != "zero-shot"} == {
        "cbbt": 32, "cbbt-adapter": 32, "cbbt-tip": 32, "zip": 128, "blackvip-tokens": 128,
        "coop": 32}
    assert not sizes["cbbt"].needs_features and sizes["cbbt-adapter"].needs_features
    assert sizes["cbbt"].estimator.mu == pytest.approx(1 / 512)
    assert sizes["zip"].estimator.gamma == 0.1 and sizes["blackvip-tokens"].estimator.beta == 0.9
    assert not sizes["coop"].black_box and sizes["coop"].needs_gradient
    assert all(m.black_box for k, m in sizes.items() if k != "coop")


def test_plan_drives_the_cosine_schedule():
    rule = UpdateRule(ZerothOrderConfig(lr=0.1, schedule="cosine"), 3)
    assert [rule.learning_rate(t, 4) for t in range(4)] == pytest.approx(
        [0.1, 0.1 * (1 + np.cos(np.pi / 4)) / 2, 0.05, 0.1 * (1 + np.cos(3 * np.pi / 4)) / 2])
    assert rule.learning_rate(10, 4) == rule.learning_rate(3, 4) > 0  # past the plan: kept
    assert rule.learning_rate(2, None) == 0.1  # no plan: constant
    warm = UpdateRule(ZerothOrderConfig(lr=0.1, warmup_steps=2, warmup_lr=1e-5), 3)
    assert [warm.learning_rate(t, 6) for t in range(3)] == [1e-5, 1e-5, 0.1]
    spsa = UpdateRule(ZerothOrderConfig(update="spsa", lr=0.01, spsa_alpha=0.4), 3)
    assert spsa.learning_rate(0, 4) == pytest.approx(0.01 / 2**0.4)  # a_1 = a / (1 + 1)^alpha


def test_plan_changes_the_trajectory(registry):
    """SGD on a linear loss with exact (coordinate) estimates: x moves by the sum of the gains."""
    moved = {}
    for planned in (4, 1000, None):
        overrides = {"update": "sgd", "lr": 1.0, "estimator": "coordinate", "q": 3}
        method = registry.create("zo", overrides, SearchSpace(3), seed=0)
        method.plan(planned)
        for _ in range(4):
            z = method.ask()
            method.tell(z, Evaluation(losses=z.sum(axis=1)))  # gradient (1, 1, 1)
        moved[planned] = -method.recommend()
    cosine = [0.5 * (1 + np.cos(np.pi * t / 4)) for t in range(4)]
    np.testing.assert_allclose(moved[4], np.full(3, sum(cosine)), rtol=1e-6)
    assert 3.9 < moved[1000][0] < 4.0
    np.testing.assert_allclose(moved[None], np.full(3, 4.0), rtol=1e-6)


def test_adam_and_adapter_adamw_match_torch():
    """The prompt's Adam (L2, CBBT) and the adapter's AdamW reproduce torch.optim exactly."""
    import torch

    config = ZerothOrderConfig(lr=0.01, weight_decay=5e-4, clip_norm=5.0)
    rule = UpdateRule(config, 4)
    x = np.array([0.3, -1.0, 2.0, 0.0])
    p = torch.tensor(x.copy(), requires_grad=True)
    w = torch.tensor(x.copy(), requires_grad=True)
    adam = torch.optim.Adam([p], lr=0.01, weight_decay=5e-4)
    adamw, ours = torch.optim.AdamW([w], lr=1e-3, weight_decay=0.01), GrowingAdamW(1e-3, 0.01)
    v = torch.tensor(x.copy(), requires_grad=True)
    rng = np.random.default_rng(0)
    for _ in range(5):
        g = 10 * rng.normal(size=4)
        x = rule.step(x, g, None)
        p.grad, w.grad, v.grad = torch.tensor(g), torch.tensor(g), torch.tensor(g)
        torch.nn.utils.clip_grad_norm_([p], 5.0)
        adam.step()
        adamw.step()
        ours.step({"v": v})
    np.testing.assert_allclose(x, p.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(v.detach().numpy(), w.detach().numpy(), rtol=1e-12, atol=1e-12)


def test_zip_clips_to_sqrt_dim():
    rule = UpdateRule(spsa_methods.ZIPConfig(), 400)
    g = np.full(400, 3.0)
    assert np.linalg.norm(rule.clip(g)) == pytest.approx(20.0, rel=1e-6)
    assert np.array_equal(rule.clip(g / 100), g / 100)


# ------------------------------------------------------------------ zero-shot, CoOp, config


def test_zero_shot_asks_nothing_and_stops_at_once(registry):
    method = registry.create("zero-shot", {}, SearchSpace(8), seed=0)
    assert method.zero_shot and method.ask_size == 0 and method.ask().shape == (0, 8)
    assert "zero_shot" in method.stop()
    assert run(method, Quadratic(8), 10) == []
    np.testing.assert_array_equal(method.recommend(), np.zeros(8))
    restored = pickle.loads(pickle.dumps(method))
    restored.load_state_dict(method.state_dict())


def test_coop_needs_gradients(registry):
    method = registry.create("coop", {}, SearchSpace(6), seed=0)
    z = method.ask()
    with pytest.raises(ConfigError, match="gradients"):
        method.tell(z, Evaluation(losses=np.zeros(1)))
    np.testing.assert_array_equal(z, np.zeros((1, 6)))


def test_tell_must_follow_ask(registry):
    method = registry.create("zo", {}, SearchSpace(6), seed=0)
    with pytest.raises(ConfigError, match="pending"):
        method.tell(np.zeros((17, 6)), Evaluation(losses=np.zeros(17)))
    z = method.ask()
    np.testing.assert_array_equal(z, method.ask())  # ask is idempotent until tell
    with pytest.raises(ConfigError):
        method.tell(z[:3], Evaluation(losses=np.zeros(3)))


@pytest.mark.parametrize("bad", [
    {"estimator": "nope"}, {"update": "rmsprop"}, {"schedule": "step"}, {"lr": 0.0},
    {"clip_norm": 1.0, "clip_sqrt_dim": True}, {"q": 0}, {"batch_size": 0}, {"adam_beta1": 1.0},
])
def test_bad_zo_configs_are_rejected(registry, bad):
    with pytest.raises(ConfigError):
        registry.make_config("zo", bad)


@pytest.mark.parametrize("bad", [
    {"adapter": "lora"}, {"adapter_ratio": 1.5}, {"adapter_start": 2.0}, {"tip_beta": 0.0},
])
def test_bad_cbbt_configs_are_rejected(registry, bad):
    with pytest.raises(ConfigError):
        registry.make_config("cbbt-adapter", bad)


def test_registered_names_and_documented_fields(registry):
    assert set(registry.names()) == {
        "zo", "cbbt", "cbbt-adapter", "cbbt-tip", "zip", "blackvip-tokens", "zero-shot", "coop"}
    defaults = registry.make_config("cbbt")
    assert (defaults.n_text, defaults.text_init, defaults.intrinsic_dim_text) == (1, "a", None)
    assert (defaults.estimator, defaults.q, defaults.lr, defaults.weight_decay, defaults.clip_norm,
            defaults.schedule, defaults.warmup_epochs, defaults.warmup_lr) == (
        "sphere", 256, 0.002, 5e-4, 5.0, "cosine_epoch", 1, 1e-5)
    tip = registry.make_config("cbbt-tip")  # CBBT train.py: init_alpha 3.0, init_beta 1.0
    assert (tip.tip_alpha, tip.tip_beta, tip.tip_clip_scale) == (3.0, 1.0, 60.0)
    zip_ = registry.make_config("zip")
    assert (zip_.intrinsic_dim_text, zip_.text_subspace, zip_.subspace_rank,
            zip_.text_init_std) == (500, "lowrank", 5, 0.02)
    assert registry.make_config("coop").text_init == "a photo of a"
    for name in registry.names():
        fields = dataclasses.fields(registry.entry(name).config_cls)
        assert all(f.default is not dataclasses.MISSING for f in fields)


def test_cbbt_runs_dassls_per_epoch_cosine_after_one_warm_up_epoch(registry):
    # CBBT (configs/trainers/CBBT): one epoch at 1e-5, then Dassl's cosine stepped per epoch;
    # the loop tells the method its epoch: 160 images // 32 = 5 steps.
    from sweep.budget import BudgetSpec
    from sweep.run.loop import start_loop
    from sweep.testing.objectives import QuadraticObjective

    method = registry.create("cbbt", {"q": 4}, SearchSpace(8), seed=0)
    objective = QuadraticObjective(8, BudgetSpec(unit="candidate_evals", limit=50 * 5), images=160)
    start_loop(method, objective)
    assert (method.planned, method.rule.per_epoch) == (50, 5)  # 10 epochs of 5 steps
    rates = [method.rule.learning_rate(t, method.planned) for t in range(50)]
    assert rates[:5] == [1e-5] * 5
    for epoch in range(1, 10):
        expected = 0.002 * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / 10))
        assert rates[5 * epoch:5 * epoch + 5] == pytest.approx([expected] * 5)
