"""The oracle and prompt injection, each checked against an independent computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sweep.budget import UNITS, BudgetSpec, QueryCounts
from sweep.errors import BudgetExceededError, ConfigError, ModelError
from sweep.data import PixelCache
from sweep.oracle import ClipOracle, DeviceCache, ImageStore, PromptedCLIP, PromptLayout, load_model
from sweep.spec import ModelSpec

TOL = 1e-5


def reference_text_features(model, tokenizer, classnames, ctx: torch.Tensor) -> torch.Tensor:
    """Straightforward CoOp: full 77-token sequences, one candidate, open_clip's own modules."""
    n = ctx.shape[0]
    tokens = tokenizer([" ".join(["X"] * n) + f" {c}." for c in classnames])
    x = model.token_embedding(tokens).clone()
    x[:, 1:1 + n] = ctx
    x = x + model.positional_embedding
    x = model.transformer(x, attn_mask=model.attn_mask)
    x = model.ln_final(x)[torch.arange(len(classnames)), tokens.argmax(dim=-1)]
    return F.normalize(x @ model.text_projection, dim=-1)


def images_of(oracle: ClipOracle) -> torch.Tensor:
    """The model's inputs for the oracle's training images."""
    return torch.cat(list(oracle.images.batches(oracle.task.train)))


def test_context_of_real_words_equals_encode_text(tiny_vit, task):
    layout = PromptLayout(n_text=4, text_init="a photo of a")
    prompted = PromptedCLIP(tiny_vit.model, tiny_vit.tokenizer, task.classnames, layout)
    with torch.no_grad():
        ours = prompted.text_features(prompted.initial_text()[None])[0]
        tokens = tiny_vit.tokenizer([f"a photo of a {c}." for c in task.classnames])
        expected = tiny_vit.model.encode_text(tokens, normalize=True)
    torch.testing.assert_close(ours, expected, atol=TOL, rtol=0)


def test_a_template_layout_encodes_the_data_sets_template(tiny_vit, task):
    # BlackVIP's text side: no context, the data set's hand-written template.
    layout = PromptLayout(n_text=0, n_visual=2, template=True)
    prompted = PromptedCLIP(tiny_vit.model, tiny_vit.tokenizer, task.classnames, layout,
                            template="a blurry photo of the digit {}.")
    with torch.no_grad():
        ours = prompted.text_features(torch.zeros(1, *prompted.text_shape))[0]
        tokens = tiny_vit.tokenizer([f"a blurry photo of the digit {c}." for c in task.classnames])
        expected = tiny_vit.model.encode_text(tokens, normalize=True)
    torch.testing.assert_close(ours, expected, atol=TOL, rtol=0)
    with pytest.raises(ConfigError, match="no context"):
        PromptLayout(n_text=2, template=True)


def test_truncated_text_equals_full_77_token_pass(tiny_vit, task):
    layout = PromptLayout(n_text=5)
    prompted = PromptedCLIP(tiny_vit.model, tiny_vit.tokenizer, task.classnames, layout)
    assert prompted._tokens.shape[1] < 77  # the cut is real
    ctx = torch.randn(2, 5, prompted.text_width, generator=torch.Generator().manual_seed(3)) * 0.02
    with torch.no_grad():
        ours = prompted.text_features(ctx)
        for i in range(2):
            ref = reference_text_features(tiny_vit.model, tiny_vit.tokenizer, task.classnames, ctx[i])
            torch.testing.assert_close(ours[i], ref, atol=TOL, rtol=0)


@pytest.mark.parametrize("layout", [PromptLayout(n_text=4), PromptLayout(n_text=0),
                                    PromptLayout(n_text=3, deep=True)], ids=["shallow", "none", "deep"])
def test_shared_prefix_equals_the_full_causal_pass(tiny_vit, layout):
    # Names of 1 to 6 tokens give several suffix lengths; 16 tokens per forward forces
    # blocks of classes and chunks of candidates.
    names = ("cat", "great white shark", "x", "sulphur-crested cockatoo", "dog", "king penguin")
    shared = PromptedCLIP(tiny_vit.model, tiny_vit.tokenizer, names, layout, max_batch_tokens=16)
    full = PromptedCLIP(tiny_vit.model, tiny_vit.tokenizer, names, layout)
    full.shares_prefix = False
    assert shared.shares_prefix and len(shared._suffixes) >= 2
    assert max(len(groups) for groups in shared._suffixes) >= 2  # several lengths in one forward
    ctx = torch.randn(3, *shared.text_shape, generator=torch.Generator().manual_seed(8)) * 0.05
    with torch.no_grad():
        torch.testing.assert_close(shared.text_features(ctx), full.text_features(ctx), atol=TOL, rtol=0)


def test_zero_visual_tokens_equal_encode_image(tiny_vit, task):
    oracle = ClipOracle(tiny_vit, task, PromptLayout(n_text=2))
    images = images_of(oracle)
    with torch.no_grad():
        expected = tiny_vit.model.encode_image(images, normalize=True)
        plain = oracle.prompted.image_features(images)
        empty = torch.zeros(1, 0, oracle.prompted.visual_width)
        inserted = oracle.prompted.prompted_image_features(
            oracle.prompted.patch_embeddings(images), empty)[0]
    torch.testing.assert_close(plain, expected, atol=TOL, rtol=0)
    torch.testing.assert_close(inserted, expected, atol=TOL, rtol=0)


def _random_prompts(oracle: ClipOracle, n: int, seed: int):
    rng = np.random.default_rng(seed)
    text = rng.normal(0, 0.05, size=(n, *oracle.text_shape)).astype(np.float32)
    visual = None
    if oracle.layout.n_visual:
        visual = rng.normal(0, 0.5, size=(n, *oracle.visual_shape)).astype(np.float32)
    return text, visual


@pytest.mark.parametrize("layout", [
    PromptLayout(n_text=4),
    PromptLayout(n_text=4, n_visual=3),
    PromptLayout(n_text=3, n_visual=2, deep=True),
], ids=["text", "text+visual", "deep"])
def test_batched_equals_one_at_a_time(tiny_vit, task, layout):
    # A small token bound forces chunks that split candidates and classes apart.
    batched = ClipOracle(tiny_vit, task, layout, max_batch_tokens=40)
    single = ClipOracle(tiny_vit, task, layout)
    text, visual = _random_prompts(batched, 5, seed=1)
    ev = batched.evaluate(text=text, visual=visual, features=True)
    for i in range(5):
        one = single.evaluate(text=text[i:i + 1], visual=None if visual is None else visual[i:i + 1],
                              features=True)
        np.testing.assert_allclose(ev.losses[i], one.losses[0], atol=TOL)
        np.testing.assert_allclose(ev.accuracies[i], one.accuracies[0], atol=TOL)
        np.testing.assert_allclose(ev.text_features[i], one.text_features[0], atol=TOL)
        img_i = ev.image_features[i if visual is not None else 0]
        np.testing.assert_allclose(img_i, one.image_features[0], atol=TOL)
    assert len(set(np.round(ev.losses, 6))) == 5  # the candidates really differ


def test_logits_in_chunks_equal_logits_at_once(tiny_vit, task):
    layout = PromptLayout(n_text=2, n_visual=2)
    oracle = ClipOracle(tiny_vit, task, layout)
    text, visual = _random_prompts(oracle, 5, seed=7)
    at_once = oracle.evaluate(text=text, visual=visual)
    chunks = ClipOracle(tiny_vit, task, layout, max_logits=2 * len(task.train) * task.num_classes)
    chunked = chunks.evaluate(text=text, visual=visual)  # chunks of 2, 2 and 1 candidates
    np.testing.assert_allclose(chunked.losses, at_once.losses, atol=TOL)
    np.testing.assert_array_equal(chunked.accuracies, at_once.accuracies)


def test_losses_match_an_independent_computation(tiny_vit, task):
    oracle = ClipOracle(tiny_vit, task, PromptLayout(n_text=3))
    text, _ = _random_prompts(oracle, 2, seed=4)
    ev = oracle.evaluate(text=text)
    model = tiny_vit.model
    with torch.no_grad():
        img = model.encode_image(images_of(oracle), normalize=True)
        labels = torch.as_tensor(task.train.labels)
        for i in range(2):
            txt = reference_text_features(model, tiny_vit.tokenizer, task.classnames, torch.as_tensor(text[i]))
            logits = model.logit_scale.exp() * img @ txt.T
            assert ev.losses[i] == pytest.approx(float(F.cross_entropy(logits, labels)), abs=TOL)
            acc = float((logits.argmax(-1) == labels).float().mean())
            assert ev.accuracies[i] == pytest.approx(acc, abs=TOL)


def test_deep_prompts_act_at_every_layer(tiny_vit, task):
    oracle = ClipOracle(tiny_vit, task, PromptLayout(n_text=2, n_visual=2, deep=True), glass_box=True)
    text, visual = _random_prompts(oracle, 1, seed=5)
    _, g_text, g_vis = oracle.gradient(text=text, visual=visual)
    assert g_text.shape == (1, *oracle.text_shape) and g_vis.shape == (1, *oracle.visual_shape)
    for layer in range(oracle.text_shape[0]):
        assert np.abs(g_text[0, layer]).sum() > 0
    for layer in range(oracle.visual_shape[0]):
        assert np.abs(g_vis[0, layer]).sum() > 0


@pytest.mark.parametrize("layout", [PromptLayout(n_text=3), PromptLayout(n_text=2, n_visual=2)],
                         ids=["text", "text+visual"])
def test_glass_box_gradient_matches_finite_differences(tiny_vit, task, layout):
    oracle = ClipOracle(tiny_vit, task, layout, glass_box=True)
    text, visual = _random_prompts(oracle, 1, seed=6)
    _, g_text, g_vis = oracle.gradient(text=text, visual=visual)
    rng = np.random.default_rng(0)
    d_text = rng.normal(size=text.shape).astype(np.float32)
    d_vis = None if visual is None else rng.normal(size=visual.shape).astype(np.float32)
    h = 1e-3
    plus = oracle.evaluate(text=text + h * d_text, visual=None if visual is None else visual + h * d_vis)
    minus = oracle.evaluate(text=text - h * d_text, visual=None if visual is None else visual - h * d_vis)
    numeric = (plus.losses[0] - minus.losses[0]) / (2 * h)
    analytic = float((g_text * d_text).sum()) + (0.0 if g_vis is None else float((g_vis * d_vis).sum()))
    assert analytic == pytest.approx(numeric, rel=2e-2, abs=1e-4)


def test_gradient_needs_glass_box(tiny_vit, task):
    oracle = ClipOracle(tiny_vit, task, PromptLayout(n_text=2))
    with pytest.raises(ModelError, match="glass-box"):
        oracle.gradient(text=oracle.initial_text()[None])


@pytest.mark.parametrize("unit", UNITS)
def test_budget_is_refused_exactly_at_its_boundary(tiny_vit, task, unit):
    per_candidate = QueryCounts.of_request(1, len(task.train), task.num_classes, 5)[unit]
    budget = BudgetSpec(unit=unit, limit=3 * per_candidate, batch_size=5)
    oracle = ClipOracle(tiny_vit, task, PromptLayout(n_text=2), budget)
    text, _ = _random_prompts(oracle, 3, seed=7)
    with pytest.raises(BudgetExceededError):
        oracle.evaluate(text=np.concatenate([text, text[:1]]))  # 4 at once: refused whole
    assert oracle.used == QueryCounts()
    oracle.evaluate(text=text[:2])
    oracle.evaluate(text=text[2:3])  # lands exactly on the limit: allowed
    assert oracle.used[unit] == budget.limit and oracle.remaining() == 0
    before = oracle.used
    with pytest.raises(BudgetExceededError):
        oracle.evaluate(text=text[:1])
    assert oracle.used == before


def test_refused_request_computes_nothing(tiny_vit, task, monkeypatch):
    oracle = ClipOracle(tiny_vit, task, PromptLayout(n_text=2), BudgetSpec(limit=0))
    monkeypatch.setattr(oracle, "_score", lambda *a, **k: pytest.fail("computed despite refusal"))
    with pytest.raises(BudgetExceededError):
        oracle.evaluate(text=oracle.initial_text()[None])


def test_query_counts_in_every_unit(tiny_vit, task):
    oracle = ClipOracle(tiny_vit, task, PromptLayout(n_text=2), BudgetSpec(batch_size=5))
    text, _ = _random_prompts(oracle, 3, seed=8)
    oracle.evaluate(text=text)
    oracle.evaluate(text=text[:2], subset=[0, 1, 2])
    m, c = len(task.train), task.num_classes  # 12 images, 3 classes
    assert oracle.used == QueryCounts(candidate_evals=5, calls=3 * -(-m // 5) + 2 * 1,
                                      images=3 * m + 2 * 3, text_sequences=5 * c)


def test_mini_batch_subset_scores_only_those_images(tiny_vit, task):
    oracle = ClipOracle(tiny_vit, task, PromptLayout(n_text=2))
    text, _ = _random_prompts(oracle, 1, seed=9)
    full = oracle.evaluate(text=text, features=True)
    part = oracle.evaluate(text=text, subset=[1, 5, 7], features=True)
    np.testing.assert_allclose(part.image_features[0], full.image_features[0][[1, 5, 7]], atol=TOL)
    np.testing.assert_array_equal(part.labels, task.train.labels[[1, 5, 7]])
    with pytest.raises(ConfigError, match="subset"):
        oracle.evaluate(text=text, subset=[len(task.train)])


def test_evaluation_channel_never_touches_the_budget(tiny_vit, task):
    oracle = ClipOracle(tiny_vit, task, PromptLayout(n_text=2, n_visual=1), BudgetSpec(limit=0))
    text, visual = _random_prompts(oracle, 2, seed=10)
    val = oracle.evaluate_split("val", text=text, visual=visual)
    test = oracle.evaluate_split("test", text=text, visual=visual)
    zs = oracle.zero_shot("test")
    assert val.losses.shape == test.losses.shape == (2,) and zs.accuracies.shape == (1,)
    assert oracle.used == QueryCounts()
    assert oracle.eval_used.candidate_evals == 5
    with pytest.raises(ConfigError, match="split"):
        oracle.evaluate_split("train", text=text, visual=visual)


def test_streamed_split_equals_cached_split(tiny_vit, task, tmp_path):
    cached = ClipOracle(tiny_vit, task, PromptLayout(n_text=2, n_visual=2))
    nothing_kept = ImageStore(tiny_vit, PixelCache(tmp_path, tiny_vit.pixels[0]), DeviceCache(0),
                              batch=2)  # the 9 test images in 5 batches
    streamed = ClipOracle(tiny_vit, task, PromptLayout(n_text=2, n_visual=2), images=nothing_kept)
    text, visual = _random_prompts(cached, 2, seed=11)
    a = cached.evaluate_split("test", text=text, visual=visual)
    b = streamed.evaluate_split("test", text=text, visual=visual)
    np.testing.assert_allclose(a.losses, b.losses, atol=TOL)


@pytest.mark.parametrize("text_shape_delta", [(0, 1), (1, 0)])
def test_prompt_shape_mismatch_is_a_clear_error(tiny_vit, task, text_shape_delta):
    oracle = ClipOracle(tiny_vit, task, PromptLayout(n_text=2))
    shape = tuple(s + d for s, d in zip(oracle.text_shape, text_shape_delta))
    with pytest.raises(ModelError, match="text prompts must have shape"):
        oracle.evaluate(text=np.zeros((1, *shape), np.float32))


def test_missing_and_unexpected_prompts_are_errors(tiny_vit, task):
    oracle = ClipOracle(tiny_vit, task, PromptLayout(n_text=2))
    with pytest.raises(ModelError, match="required"):
        oracle.evaluate()
    with pytest.raises(ModelError, match="n_visual = 0"):
        oracle.evaluate(text=oracle.initial_text()[None], visual=np.zeros((1, 1, 48), np.float32))


def test_text_init_length_must_match(tiny_vit, task):
    oracle = ClipOracle(tiny_vit, task, PromptLayout(n_text=3, text_init="a photo of a"))
    with pytest.raises(ConfigError, match="4 tokens"):
        oracle.initial_text()


def test_visual_prompts_on_a_resnet_are_refused(tiny_configs, task):
    model = load_model(ModelSpec(name="test-tiny-rn"), "cpu")
    with pytest.raises(ModelError, match="ViT"):
        ClipOracle(model, task, PromptLayout(n_text=2, n_visual=2))
    # Text prompts alone work on a ResNet.
    ev = ClipOracle(model, task, PromptLayout(n_text=2)).evaluate(text=np.zeros((1, 2, 32), np.float32))
    assert np.isfinite(ev.losses).all()


def test_unknown_model_names_close_matches():
    with pytest.raises(ModelError, match="unknown model 'ViT-B-33'.*ViT-B-32"):
        load_model(ModelSpec(name="ViT-B-33"), "cpu")


def test_corrupt_and_mismatched_checkpoints(tiny_configs, tiny_vit, tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="corrupt.pt"):
        load_model(ModelSpec(name="test-tiny-vit", checkpoint=str(corrupt)), "cpu")
    mismatched = tmp_path / "rn.pt"
    torch.save(load_model(ModelSpec(name="test-tiny-rn"), "cpu").model.state_dict(), mismatched)
    with pytest.raises(ModelError, match="does not match architecture 'test-tiny-vit'"):
        load_model(ModelSpec(name="test-tiny-vit", checkpoint=str(mismatched)), "cpu")
    with pytest.raises(ModelError, match="does not exist"):
        load_model(ModelSpec(name="test-tiny-vit", checkpoint=str(tmp_path / "missing.pt")), "cpu")


def test_checkpoint_round_trip_is_exact(tiny_configs, tiny_vit, tmp_path, task):
    path = tmp_path / "vit.pt"
    torch.save(tiny_vit.model.state_dict(), path)
    again = load_model(ModelSpec(name="test-tiny-vit", checkpoint=str(path)), "cpu")
    layout = PromptLayout(n_text=2)
    text = np.full((1, 2, 32), 0.01, np.float32)
    a = ClipOracle(tiny_vit, task, layout).evaluate(text=text).losses
    b = ClipOracle(again, task, layout).evaluate(text=text).losses
    np.testing.assert_array_equal(a, b)


def test_checkpoint_with_code_is_refused(tiny_configs, tmp_path):
    # A pickle that would run code: weights_only=True must refuse to load it.
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": object()}, path)
    with pytest.raises(ModelError, match="weights-only"):
        load_model(ModelSpec(name="test-tiny-vit", checkpoint=str(path)), "cpu")


@pytest.mark.parametrize("bad", [{"unit": "tokens"}, {"limit": -1}, {"batch_size": 0}])
def test_bad_budget_specs(bad):
    with pytest.raises(ConfigError):
        BudgetSpec(**bad)


@pytest.mark.parametrize("bad", [{"n_text": -1}, {"n_visual": 1.5}, {"n_text": 0, "text_init": "a"}])
def test_bad_layouts(bad):
    with pytest.raises(ConfigError):
        PromptLayout(**bad)
