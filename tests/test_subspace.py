"""The z -> prompt parametrisation: reproducibility, linearity, projection scales, deep layout."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from methods.base import PromptConfig
from methods.errors import ConfigError
from methods.subspace import ModelStats, Parametrisation

# Small widths keep every test in milliseconds; the statistics tests use enough entries
# (>= 3,000 per matrix) for a few-percent tolerance to be many standard errors wide.
W_TEXT, W_VIS = 16, 24
STATS = ModelStats(
    token_embedding_std=0.02,
    patch_weight_mean=0.003,
    patch_weight_std=0.015,
    patch_fan_in=192,  # 3 * 8 * 8, the tiny test ViT
    text_hidden_std=(0.5, 0.8, 1.3),
    visual_hidden_std=(0.4, 0.9, 1.7, 2.5),
)


def shallow(n_text=4, n_visual=3, d_text=40, d_visual=30, **kw):
    cfg = PromptConfig(n_text=n_text, n_visual=n_visual, intrinsic_dim_text=d_text,
                       intrinsic_dim_visual=d_visual, **kw)
    return cfg, (n_text, W_TEXT) if n_text else None, (n_visual, W_VIS) if n_visual else None


def deep(l_text=3, l_visual=4, n_text=4, n_visual=3, d_text=40, d_visual=30, **kw):
    cfg = PromptConfig(n_text=n_text, n_visual=n_visual, deep=True, intrinsic_dim_text=d_text,
                       intrinsic_dim_visual=d_visual, **kw)
    return (cfg, (l_text, n_text, W_TEXT) if n_text else None,
            (l_visual, n_visual, W_VIS) if n_visual else None)


def build(layout, seed=3, stats=STATS, **kw) -> Parametrisation:
    cfg, ts, vs = layout
    return Parametrisation(cfg, ts, vs, stats, seed, **kw)


def randn(par: Parametrisation, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, par.space.dim))


def all_matrices(par: Parametrisation) -> list[np.ndarray]:
    return [par.matrix(s.tower, s.layer) for s in par.segments]


# ------------------------------------------------------------------ reproducibility
@pytest.mark.parametrize("layout", [shallow(), deep()], ids=["shallow", "deep"])
def test_rebuilt_identically_and_seed_matters(layout):
    a, b = build(layout), build(layout)
    # Build b's matrices in the reverse order: the draw must not depend on it.
    for seg in reversed(b.segments):
        b.matrix(seg.tower, seg.layer)
    for ma, mb in zip(all_matrices(a), all_matrices(b)):
        assert ma.dtype == np.float32
        np.testing.assert_array_equal(ma, mb)
    z = randn(a, 5)
    for pa, pb in zip(a.prompts(z), b.prompts(z)):
        np.testing.assert_array_equal(pa, pb)

    other = build(layout, seed=4)
    for ma, mo in zip(all_matrices(a), all_matrices(other)):
        assert not np.array_equal(ma, mo)
    for pa, po in zip(a.prompts(z), other.prompts(z)):
        assert not np.allclose(pa, po)


def _digest(par: Parametrisation) -> str:
    h = hashlib.sha256()
    for seg in par.segments:  # deep: the layers in order, each tower's matrix
        h.update(par.matrix(seg.tower, seg.layer).tobytes())
    return h.hexdigest()


def test_rebuilt_identically_in_another_process():
    # The contract that lets only z cross a process boundary: a fresh interpreter,
    # given the same inputs, draws the same bits.
    code = (
        "from tests.test_subspace import build, deep, _digest\n"
        "print(_digest(build(deep())))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=str(Path(__file__).parents[1]))
    assert out.stdout.strip() == _digest(build(deep()))


def test_matrices_independent_across_towers_and_layers():
    par = build(deep())
    mats = all_matrices(par)
    # Standardised first entries differ: no two (layer, tower) keys share a stream.
    firsts = {float((m.flat[0] - s.mean) / s.std) for m, s in zip(mats, par.segments)}
    assert len(firsts) == len(mats)


def test_uncached_equals_cached():
    cached, fresh = build(deep()), build(deep(), cache=False)
    z = randn(cached, 3)
    for pc, pf in zip(cached.prompts(z), fresh.prompts(z)):
        np.testing.assert_array_equal(pc, pf)
    assert fresh._matrices == {}


# ------------------------------------------------------------------ the map
@pytest.mark.parametrize("layout", [shallow(), deep()], ids=["shallow", "deep"])
def test_zero_gives_init_and_shapes(layout):
    cfg, ts, vs = layout
    rng = np.random.default_rng(1)
    t0, v0 = rng.standard_normal(ts), rng.standard_normal(vs)
    par = build(layout, text_init=t0, visual_init=v0)
    text, vis = par.prompts(np.zeros((4, par.space.dim)))
    assert text.shape == (4, *ts) and vis.shape == (4, *vs)
    assert text.dtype == vis.dtype == np.float32
    np.testing.assert_array_equal(text, np.broadcast_to(t0.astype(np.float32), text.shape))
    np.testing.assert_array_equal(vis, np.broadcast_to(v0.astype(np.float32), vis.shape))
    # No product ran, so no matrix was drawn.
    assert par._matrices == {}
    text, vis = par.prompts(randn(par, 2))
    assert text.shape == (2, *ts) and vis.shape == (2, *vs)


@pytest.mark.parametrize("layout", [shallow(), deep(), shallow(d_text=None, d_visual=None)],
                         ids=["shallow", "deep", "identity"])
def test_linear_in_z(layout):
    cfg, ts, vs = layout
    rng = np.random.default_rng(2)
    par = build(layout, text_init=rng.standard_normal(ts), visual_init=rng.standard_normal(vs))
    p0 = par.initial()
    z1, z2 = randn(par, 3, seed=5), randn(par, 3, seed=6)
    a, b = 0.7, -1.9
    lhs = par.prompts(a * z1 + b * z2)
    r1, r2 = par.prompts(z1), par.prompts(z2)
    for left, x1, x2, base in zip(lhs, r1, r2, p0):
        np.testing.assert_allclose(left - base, a * (x1 - base) + b * (x2 - base),
                                   rtol=1e-4, atol=1e-5)


def test_prompt_is_the_matrix_product():
    par = build(shallow())
    z = randn(par, 2)
    text, vis = par.prompts(z)
    st, sv = par.segment("text"), par.segment("visual")
    expect_t = (z[:, st.start:st.stop] @ par.matrix("text").astype(np.float64).T)
    expect_v = (z[:, sv.start:sv.stop] @ par.matrix("visual").astype(np.float64).T)
    np.testing.assert_allclose(text.reshape(2, -1), expect_t, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(vis.reshape(2, -1), expect_v, rtol=1e-4, atol=1e-6)


def test_identity_round_trips():
    layout = shallow(d_text=None, d_visual=None)
    par = build(layout)
    assert par.space.dim == 4 * W_TEXT + 3 * W_VIS and par.nbytes == 0
    z = randn(par, 3)
    text, vis = par.prompts(z)
    z32 = z.astype(np.float32)
    np.testing.assert_array_equal(text.reshape(3, -1), z32[:, :4 * W_TEXT])
    np.testing.assert_array_equal(vis.reshape(3, -1), z32[:, 4 * W_TEXT:])
    assert par.matrix("text") is None


def test_mixed_identity_and_projection():
    cfg = PromptConfig(n_text=2, n_visual=3, intrinsic_dim_text=None, intrinsic_dim_visual=7)
    par = Parametrisation(cfg, (2, W_TEXT), (3, W_VIS), STATS, 0)
    assert par.space.dim == 2 * W_TEXT + 7
    z = randn(par, 2)
    text, _ = par.prompts(z)
    np.testing.assert_array_equal(text.reshape(2, -1), z[:, :2 * W_TEXT].astype(np.float32))


def test_text_only_and_visual_only():
    text_only = build(shallow(n_visual=0, d_visual=None))
    assert text_only.space.dim == 40
    t, v = text_only.prompts(randn(text_only, 2))
    assert v is None and t.shape == (2, 4, W_TEXT)
    vis_only = build(shallow(n_text=0, d_text=None))
    t, v = vis_only.prompts(randn(vis_only, 2))
    assert t is None and v.shape == (2, 3, W_VIS)


# ------------------------------------------------------------------ projection scales
def assert_entries(m: np.ndarray, mean: float, std: float) -> None:
    n = m.size
    # Sample mean and std within ~5 standard errors.
    assert abs(m.mean() - mean) < 5 * std / np.sqrt(n)
    assert abs(m.std() - std) < 5 * std / np.sqrt(2 * n)


@pytest.mark.parametrize("sigma", [1.0, 0.5])
def test_text_rule(sigma):
    par = build(shallow(d_text=50, projection_sigma=sigma))
    seg = par.segment("text")
    expected = STATS.token_embedding_std / (np.sqrt(50) * sigma)
    assert seg.mean == 0.0 and seg.std == pytest.approx(expected)
    assert_entries(par.matrix("text"), 0.0, expected)


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_visual_rule_has_bptvlm_mean_and_scale(sigma):
    d = 50
    par = build(shallow(d_visual=d, projection_sigma=sigma))
    seg = par.segment("visual")
    mean = STATS.patch_weight_mean * STATS.patch_fan_in / d
    std = STATS.patch_weight_std * np.sqrt(STATS.patch_fan_in / d) * sigma
    assert seg.mean == pytest.approx(mean) and seg.std == pytest.approx(std)
    m = par.matrix("visual")
    assert_entries(m, mean, std)
    assert m.mean() > 10 * std / np.sqrt(m.size)  # the non-zero mean is really there


def test_deep_rules_per_layer():
    alpha, sigma = 0.3, 0.8
    par = build(deep(projection_alpha=alpha, projection_sigma=sigma))
    for seg in par.segments:
        m = par.matrix(seg.tower, seg.layer)
        d = seg.intrinsic_dim
        if seg.layer == 0:
            # Layer 0 follows the shallow rules, the visual one with conv1's own std.
            shallow_seg = build(shallow(projection_sigma=sigma)).segment(seg.tower)
            mean, std = shallow_seg.mean, shallow_seg.std
        else:
            hidden = STATS.text_hidden_std if seg.tower == "text" else STATS.visual_hidden_std
            mean, std = 0.0, alpha * hidden[seg.layer] / (np.sqrt(d) * sigma)
        assert seg.mean == pytest.approx(mean) and seg.std == pytest.approx(std)
        assert_entries(m, mean, std)


# ------------------------------------------------------------------ deep layout
def test_deep_blocks_tile_and_are_per_layer():
    par = build(deep(l_text=3, l_visual=4))
    blocks = par.space.blocks
    assert len(blocks) == 4
    assert blocks[0][0] == 0 and blocks[-1][1] == par.space.dim
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
    # Layers 0..2: text then visual; layer 3: visual only.
    assert [(s.tower, s.layer) for s in par.segments] == [
        ("text", 0), ("visual", 0), ("text", 1), ("visual", 1), ("text", 2), ("visual", 2),
        ("visual", 3)]
    assert [b[1] - b[0] for b in blocks] == [70, 70, 70, 30]
    assert par.space.dim == 3 * 40 + 4 * 30
    assert build(shallow()).space.blocks is None


def test_changing_one_block_changes_only_its_layer():
    par = build(deep(l_text=3, l_visual=4))
    z = randn(par, 2)
    text, vis = par.prompts(z)
    for layer, (a, b) in enumerate(par.space.blocks):
        z2 = z.copy()
        z2[:, a:b] += 1.0
        t2, v2 = par.prompts(z2)
        for prompt, new, depth in ((text, t2, 3), (vis, v2, 4)):
            for i in range(depth):
                same = np.array_equal(prompt[:, i], new[:, i])
                assert same == (i != layer), (layer, i)


def test_deep_identity_layout():
    cfg = PromptConfig(n_text=2, n_visual=1, deep=True)
    par = Parametrisation(cfg, (2, 2, W_TEXT), (3, 1, W_VIS), STATS, 0)
    assert par.space.blocks == ((0, 2 * W_TEXT + W_VIS), (56, 112), (112, 112 + W_VIS))
    z = randn(par, 1)
    text, vis = par.prompts(z)
    np.testing.assert_array_equal(vis[0, 2].ravel(), z[0, 112:].astype(np.float32))
    np.testing.assert_array_equal(text[0, 1].ravel(), z[0, 56:56 + 2 * W_TEXT].astype(np.float32))


def test_nbytes():
    par = build(deep(l_text=3, l_visual=4))
    assert par.nbytes == 4 * (3 * 4 * W_TEXT * 40 + 4 * 3 * W_VIS * 30)


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "cfg_kw, ts, vs",
    [
        (dict(n_text=4, n_visual=3), (4, W_TEXT), None),  # visual prompt but no shape
        (dict(n_text=4, n_visual=0), (4, W_TEXT), (3, W_VIS)),  # shape for an absent prompt
        (dict(n_text=4), (5, W_TEXT), None),  # token count disagrees
        (dict(n_text=4, deep=True), (4, W_TEXT), None),  # deep config, shallow shape
        (dict(n_text=4), (2, 4, W_TEXT), None),  # shallow config, deep shape
        (dict(n_text=4, n_visual=0, intrinsic_dim_visual=10), (4, W_TEXT), None),
        (dict(n_text=0, n_visual=3, intrinsic_dim_text=10), None, (3, W_VIS)),
        (dict(n_text=4), (4, 0), None),  # empty width
    ],
)
def test_inconsistent_layouts_are_refused(cfg_kw, ts, vs):
    with pytest.raises(ConfigError):
        Parametrisation(PromptConfig(**cfg_kw), ts, vs, STATS, 0)


def test_bad_inits_seeds_and_stats_are_refused():
    cfg, ts, vs = shallow()
    with pytest.raises(ConfigError):
        Parametrisation(cfg, ts, vs, STATS, 0, text_init=np.zeros((3, W_TEXT)))
    with pytest.raises(ConfigError):
        Parametrisation(cfg, ts, vs, STATS, 0, visual_init=np.full(vs, np.nan))
    with pytest.raises(ConfigError):
        build(shallow(n_visual=0, d_visual=None), visual_init=np.zeros((3, W_VIS)))
    with pytest.raises(ConfigError):
        Parametrisation(cfg, ts, vs, STATS, -1)
    with pytest.raises(ConfigError):
        build(shallow(), stats=ModelStats(0.0, 0.0, 0.01, 192))  # no token-embedding std
    with pytest.raises(ConfigError):
        build(deep(l_text=3), stats=ModelStats(0.02, 0.0, 0.01, 192, (0.5, 0.8), (1.0,) * 4))
    # ResNet stats suffice for a text-only projection, and identity needs no stats at all.
    resnet = ModelStats(0.02, float("nan"), float("nan"), 0)
    build(shallow(n_visual=0, d_visual=None), stats=resnet)
    build(deep(d_text=None, d_visual=None), stats=ModelStats(float("nan"), 0.0, 0.0, 0))


def test_bad_z_is_refused():
    par = build(shallow())
    for z in (np.zeros((2, par.space.dim + 1)), np.zeros(par.space.dim),
              np.full((1, par.space.dim), np.inf)):
        with pytest.raises(ConfigError):
            par.prompts(z)


def test_stats_normalise_lists():
    st = ModelStats(0.02, 0.0, 0.01, 192, [0.5, 1.0], [])
    assert st.text_hidden_std == (0.5, 1.0) and hash(st) == hash(st)
    with pytest.raises(ConfigError):
        ModelStats(0.02, 0.0, 0.01, 19.5)


def test_pullback_is_the_transpose_of_the_map():
    # <pullback(g), dz> must equal <g, prompts(dz) - p0> for any g and dz (linearity).
    stats = ModelStats(token_embedding_std=0.02, patch_weight_mean=0.001, patch_weight_std=0.03,
                       patch_fan_in=48, text_hidden_std=(0.5, 0.7), visual_hidden_std=(1.0, 0.9))
    rng = np.random.default_rng(0)
    for deep, dims in ((False, (7, 5)), (True, (4, 3)), (False, (None, None))):
        config = PromptConfig(n_text=2, n_visual=3, deep=deep, intrinsic_dim_text=dims[0],
                              intrinsic_dim_visual=dims[1])
        text_shape = (2, 2, 6) if deep else (2, 6)
        visual_shape = (2, 3, 4) if deep else (3, 4)
        par = Parametrisation(config, text_shape, visual_shape, stats, seed=3)
        dz = rng.normal(size=(2, par.space.dim))
        g_text, g_vis = rng.normal(size=(2, *text_shape)), rng.normal(size=(2, *visual_shape))
        t, v = par.prompts(dz)
        expected = (g_text * t).reshape(2, -1).sum(1) + (g_vis * v).reshape(2, -1).sum(1)
        np.testing.assert_allclose((par.pullback(g_text, g_vis) * dz).sum(1), expected, rtol=1e-5)


# ---------------------------------------------------------------- ZIP's low-rank map


def test_zip_lowrank_step_moves_a_token_as_far_as_zip_does():
    # FIDELITY.md (ZIP): at initialisation a step c with segmented-uniform magnitudes (RMS
    # 0.764) moves a token by 0.764 c sqrt((ID / n_ctx)(rank + 1)): 14.7 c at ID 500, 8, 5.
    from methods.spsa_methods import ZIPConfig

    config, c = ZIPConfig(), 0.01
    norms = []
    for seed in range(8):
        par = Parametrisation(config, (8, 512), None, STATS, seed)
        assert par.space.dim == 417
        rng = np.random.default_rng(seed)
        steps = rng.choice([-1.0, 1.0], (16, 417)) * rng.uniform(0.5, 1.0, (16, 417))
        p0 = par.initial()[0]
        norms.append(np.linalg.norm(par.prompts(c * steps)[0] - p0, axis=-1).mean())
    expected = 0.764 * c * np.sqrt(500 / 8 * (5 + 1))
    assert np.mean(norms) == pytest.approx(expected, rel=0.05)


def test_zip_lowrank_starts_from_its_drawn_context_and_rebuilds_from_the_seed():
    from methods.spsa_methods import ZIPConfig

    a, b, other = (Parametrisation(ZIPConfig(), (8, W_TEXT), None, STATS, s) for s in (5, 5, 6))
    p0 = a.initial()[0]
    assert p0.std() == pytest.approx(0.02, rel=0.2)  # N(0, 0.02^2), not zero
    np.testing.assert_array_equal(a.prompts(np.zeros((1, a.space.dim)))[0][0], p0)
    z = np.random.default_rng(0).normal(size=(3, a.space.dim))
    np.testing.assert_array_equal(a.prompts(z)[0], b.prompts(z)[0])
    assert not np.allclose(a.prompts(z)[0], other.prompts(z)[0])
    # Not linear in z (U diag(s) V^T): doubling z does not double the offset.
    assert not np.allclose(a.prompts(2 * z)[0] - p0, 2 * (a.prompts(z)[0] - p0))
    with pytest.raises(ConfigError, match="no pullback"):
        a.pullback(np.zeros((1, 8, W_TEXT)), None)


def test_zip_lowrank_needs_a_shallow_text_prompt_with_an_intrinsic_dimension():
    with pytest.raises(ConfigError, match="lowrank"):
        PromptConfig(n_text=8, text_subspace="lowrank")
    with pytest.raises(ConfigError, match="text_subspace"):
        PromptConfig(n_text=8, intrinsic_dim_text=500, text_subspace="fastfood")


def test_bpt_vlm_one_sigma_sets_the_search_step_and_both_projections():
    # FIDELITY.md (BPT-VLM): one sigma sets CMA's sigma0 and the projections (text ~ 1/sigma,
    # visual ~ sigma); one_sigma = false leaves the projections at projection_sigma.
    from methods.es_pypop import PypopESConfig
    from methods.es_subspace import BPTVLMConfig

    def scales(config):
        par = Parametrisation(config, (8, W_TEXT), (5, W_VIS), STATS, 0)
        return par.segment("text").std, par.segment("visual").std

    text, visual = scales(BPTVLMConfig())
    for config in (BPTVLMConfig(sigma0=2.0), PypopESConfig(sigma=2.0)):
        assert scales(config) == pytest.approx((text / 2, visual * 2))
    assert scales(BPTVLMConfig(sigma0=2.0, one_sigma=False)) == pytest.approx((text, visual))
    assert scales(BPTVLMConfig(sigma0=2.0, one_sigma=False, projection_sigma=4.0)) == \
        pytest.approx((text / 4, visual * 4))
    with pytest.raises(ConfigError, match="one_sigma"):
        BPTVLMConfig(projection_sigma=2.0)
