"""Precision: the image tower may run in bf16 or fp16; the text tower, logits and losses stay fp32.

The zeroth-order signal is what must survive: CBBT's sphere estimator takes
finite differences of the loss along directions of length 1/512 (ViT-B's
step, max(1/d, 1e-3) at d = 512), and at CLIP's logit scale of 100 those
differences are about 4e-4, far below bf16's resolution of the text tower's
activations. Measured here: a bf16 image tower beside an fp32 text tower
keeps the differences within 2.7% of fp32's and the estimate's mean cosine at
0.704 (fp32: 0.704); bf16 everywhere, logits included (what the oracle did
before, under its CUDA autocast), puts them off by 6.6 times their size and
the cosine at 0.28.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from sweep.data import few_shot, load_dataset
from sweep.errors import ConfigError, ModelError
from sweep.oracle import ClipOracle, PromptLayout, load_model, resolve_precision
from sweep.spec import ModelSpec, parse_spec

STEP = 1 / 512
Q = 64
DRAWS = 20
#: bf16's finite differences may differ from fp32's by this much, relative to fp32's RMS
#: (measured 0.03 with an fp32 text tower; 3.2 with a bf16 one).
FD_TOLERANCE = 0.1
#: the mean cosine of the sphere estimate to the true gradient, bf16 against fp32.
COS_TOLERANCE = 0.02
LAYOUT = PromptLayout(n_text=1, text_init="a")  # CBBT's prompt: one token, 64 numbers here


@pytest.fixture(scope="module")
def clip_scale():
    """The embedded tiny CLIP with CLIP's logit scale (100) instead of its own (13.9)."""
    model = load_model(ModelSpec(), "cpu")
    model.model.logit_scale.data.fill_(math.log(100.0))
    return model, few_shot(load_dataset("digits"), 16, 1)


def _zeroth_order(model, task, precision: str) -> tuple[np.ndarray, float]:
    """Finite differences (DRAWS, Q) along seeded unit directions, and the mean cosine of the
    sphere estimate to the fp32 autograd gradient."""
    fp32 = ClipOracle(model, task, LAYOUT, glass_box=True)
    x = fp32.initial_text()
    _, grad, _ = fp32.gradient(text=x[None])
    grad = grad.reshape(-1)
    oracle = ClipOracle(dataclasses.replace(model, precision=precision), task, LAYOUT)
    rng = np.random.default_rng(0)  # the same directions in every precision
    diffs, cosines = [], []
    for _ in range(DRAWS):
        u = rng.normal(size=(Q, grad.size))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        points = np.concatenate([x.reshape(1, -1), x.reshape(1, -1) + STEP * u])
        losses = oracle.evaluate(text=points.reshape(-1, *x.shape)).losses
        diff = losses[1:] - losses[0]
        estimate = (grad.size / STEP) * (diff[:, None] * u).mean(axis=0)
        cosines.append(estimate @ grad / (np.linalg.norm(estimate) * np.linalg.norm(grad)))
        diffs.append(diff)
    return np.array(diffs), float(np.mean(cosines))


def _relative_error(diffs: np.ndarray, reference: np.ndarray) -> float:
    return float(np.sqrt(np.mean((diffs - reference) ** 2)) / np.sqrt(np.mean(reference ** 2)))


@pytest.mark.slow
def test_a_bf16_image_tower_keeps_the_zeroth_order_signal(clip_scale, monkeypatch):
    model, task = clip_scale
    reference, cos32 = _zeroth_order(model, task, "fp32")
    assert cos32 > 0.5  # a real signal to keep (0.70 measured)
    diffs, cos16 = _zeroth_order(model, task, "bf16")
    assert _relative_error(diffs, reference) < FD_TOLERANCE
    assert abs(cos16 - cos32) < COS_TOLERANCE
    # The oracle as it was: the text tower and the logits under the same autocast as the
    # image tower. The same measurement must fail, or this test could not tell.
    monkeypatch.setattr(ClipOracle, "_fp32",
                        lambda self: torch.autocast("cpu", dtype=torch.bfloat16))
    diffs, cos_all = _zeroth_order(model, task, "bf16")
    assert _relative_error(diffs, reference) > FD_TOLERANCE
    assert abs(cos_all - cos32) > COS_TOLERANCE


def test_text_features_and_losses_are_fp32_whatever_the_image_tower_and_the_caller(clip_scale):
    model, task = clip_scale
    fp32 = ClipOracle(model, task, LAYOUT)
    bf16 = ClipOracle(dataclasses.replace(model, precision="bf16"), task, LAYOUT)
    text = fp32.initial_text()[None] + np.random.default_rng(1).normal(0, 0.01, (3, *fp32.text_shape))
    ref = fp32.evaluate(text=text, features=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a caller's autocast does not leak in
        got = bf16.evaluate(text=text, features=True)
    np.testing.assert_array_equal(got.text_features, ref.text_features)
    assert got.image_features.dtype == np.float32 and got.losses.dtype == np.float64
    # The image tower did run in bf16: its features carry bf16's rounding, and no more.
    err = np.abs(got.image_features - ref.image_features).max()
    assert 0 < err < 0.05
    assert bf16.precision == "bf16" and fp32.precision == "fp32"


def test_precision_defaults_and_bad_values():
    assert resolve_precision(None, torch.device("cpu")) == "fp32"
    assert resolve_precision("fp16", torch.device("cpu")) == "fp16"
    with pytest.raises(ModelError, match="precision must be one of fp32, bf16, fp16"):
        ModelSpec(precision="fp8")
    toml = 'name = "p"\n[model]\nprecision = "{}"\n[budget]\nlimit = 10\n[search]\nmethods = ["bbt"]\n'
    spec = parse_spec(toml.format("bf16"), "p.toml")
    assert spec.model.precision == "bf16" and spec.model.label == "promptsweep-tiny"
    with pytest.raises(ConfigError, match="model.precision: unknown precision 'bf61'"):
        parse_spec(toml.format("bf61"), "p.toml")


def test_a_methods_own_precision_wins_and_keeps_its_features_apart(clip_scale):
    # CBBT's release runs fp32: its layout asks for it on a bf16 model, and its features,
    # in an image store shared with a bf16 oracle, are the fp32 ones.
    import methods
    from sweep.run.runner import layout_of

    model, task = clip_scale
    bf16_model = dataclasses.replace(model, precision="bf16")
    cbbt = layout_of(methods.REGISTRY.make_config("cbbt"))
    assert cbbt.precision == "fp32"
    assert layout_of(methods.REGISTRY.make_config("bbt")).precision is None
    plain = ClipOracle(bf16_model, task, LAYOUT)
    own = ClipOracle(bf16_model, task, cbbt, images=plain.images)
    assert (plain.precision, own.precision) == ("bf16", "fp32")
    text = plain.initial_text()[None]
    bf16_features = plain.evaluate(text=text, features=True).image_features
    fp32_features = own.evaluate(text=text, features=True).image_features
    reference = ClipOracle(model, task, LAYOUT).evaluate(text=text, features=True).image_features
    np.testing.assert_array_equal(fp32_features, reference)
    assert np.abs(bf16_features - reference).max() > 0
