"""Training augmentation (RandomResizedCrop + flip of the node's decoded pixels, on the device).

The views are drawn in the trial from its seed and travel with the request,
so whichever oracle serves a request scores the same views; with augmentation
and per-epoch batches off, a run is what it was before either existed (the
recorded fingerprints in ``tests/data/no_augmentation.json``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import make_task
from sweep.budget import BudgetSpec
from sweep.oracle import ClipOracle
from sweep.run import assemble, run_once
from sweep.run.runner import layout_of

import methods

GOLDEN = Path(__file__).parent / "data" / "no_augmentation.json"
#: Methods whose release trains on augmented views, each at a few steps' budget.
RUNS = {"cbbt": 3 * 257, "zip": 12, "blackvip-tokens": 12}
OLD_WAY = {"minibatches": "independent", "augment": False}


def _fingerprint(tiny_vit, name: str, params: dict) -> dict:
    """Every training loss of a short run and its final validation accuracy, as floats."""
    task = make_task(num_classes=3, shots=16, seed=4)
    config = methods.REGISTRY.make_config(name, params)
    unit = "calls" if name in ("zip", "blackvip-tokens") else "candidate_evals"
    oracle = ClipOracle(tiny_vit, task, layout_of(config), BudgetSpec(unit=unit, limit=RUNS[name]))
    run = assemble(name, config, oracle, seed=3)
    losses: list[float] = []
    evaluate = oracle.evaluate

    def recording(*args, **kwargs):
        ev = evaluate(*args, **kwargs)
        losses.extend(float(x) for x in ev.losses)
        return ev

    oracle.evaluate = recording
    result = run_once(run, checkpoints=2)
    return {"losses": losses, "final_val_acc": float(result.checkpoints[-1].val_acc)}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_without_augmentation_and_epoch_batches_a_run_is_as_before(tiny_vit, name):
    golden = json.loads(GOLDEN.read_text())[name]
    got = _fingerprint(tiny_vit, name, OLD_WAY)
    # To float rounding, not bit for bit: the recording machine's CPU may take other SIMD
    # paths (the first loss of a run differs in the 7th digit between an Intel and an AMD core).
    assert len(got["losses"]) == len(golden["losses"])
    np.testing.assert_allclose(got["losses"], golden["losses"], rtol=1e-5, atol=1e-6)
    assert got["final_val_acc"] == pytest.approx(golden["final_val_acc"], abs=1e-6)


def test_views_are_randomresizedcrop_boxes_and_flips_drawn_from_the_seed():
    from sweep.run.views import draw_views

    views = draw_views(np.random.default_rng(0), 2000)
    top, left, height, width, flip = views.T
    assert np.array_equal(views, draw_views(np.random.default_rng(0), 2000))
    assert ((top >= 0) & (left >= 0) & (top + height <= 1) & (left + width <= 1)).all()
    area, aspect = height * width, width / height
    assert area.min() >= 0.5 - 1e-12 and area.max() <= 1 and aspect.min() >= 3 / 4 - 1e-12
    assert aspect.max() <= 4 / 3 + 1e-12 and 0.45 < flip.mean() < 0.55
    # the areas torchvision's own RandomResizedCrop draws, on a large square image
    import torch
    from torchvision.transforms import RandomResizedCrop

    torch.manual_seed(0)
    image = torch.empty(1, 1000, 1000)
    theirs = [h * w / 1e6 for *_, h, w in (RandomResizedCrop.get_params(image, (0.5, 1.0),
                                                                        (3 / 4, 4 / 3))
                                           for _ in range(2000))]
    assert np.quantile(area, [0.25, 0.5, 0.75]) == pytest.approx(
        np.quantile(theirs, [0.25, 0.5, 0.75]), abs=0.02)


def test_augment_crops_resizes_and_flips_as_torchvision_samples():
    import torch
    import torch.nn.functional as F

    from sweep.oracle.augment import augment

    x = torch.randn(3, 3, 16, 16)
    views = np.array([[0, 0, 1, 1, 0], [0, 0, 1, 1, 1], [0.5, 0.25, 0.5, 0.5, 0]], dtype=float)
    out = augment(x, views)
    torch.testing.assert_close(out[0], x[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], x[1].flip(-1), atol=1e-5, rtol=0)
    # rows 8-15, columns 4-11, upsampled 2x as torchvision's bilinear resize does, away
    # from the crop's border (where the crop reads its neighbours instead of its edge)
    crop = F.interpolate(x[2:3, :, 8:16, 4:12], size=(16, 16), mode="bilinear",
                         align_corners=False)[0]
    torch.testing.assert_close(out[2, :, 1:-1, 1:-1], crop[:, 1:-1, 1:-1], atol=1e-5, rtol=0)


def test_the_objective_sends_views_from_its_seed_and_resumes_their_stream(tiny_vit):
    from sweep.run import PromptObjective

    task = make_task(num_classes=3, shots=16, seed=4)
    config = methods.REGISTRY.make_config("cbbt", {})
    assert config.augment and not methods.REGISTRY.make_config("bpt-vlm", {}).augment
    sent = []

    def objective(seed):
        oracle = ClipOracle(tiny_vit, task, layout_of(config))
        evaluate = oracle.evaluate
        oracle.evaluate = lambda **kw: sent.append(kw["views"]) or evaluate(**kw)
        return PromptObjective(oracle, config, seed)

    z = np.zeros((2, objective(1).space.dim))
    first = objective(1)
    first(z, minibatch=32)
    state = first.state()
    first(z, minibatch=32)
    again = objective(1)
    again.restore(state)
    again(z, minibatch=32)
    objective(2)(z, minibatch=32)
    assert sent[0].shape == (32, 11)  # CBBT's views: rows of DASSL_VIEW_COLUMNS
    assert np.array_equal(sent[1], sent[2]) and not np.array_equal(sent[0], sent[1])
    assert not np.array_equal(sent[0], sent[3])


def test_views_that_do_not_fit_the_request_are_refused(tiny_vit):
    from sweep.errors import ConfigError

    task = make_task(num_classes=3, shots=4)
    oracle = ClipOracle(tiny_vit, task, layout_of(methods.REGISTRY.make_config("cbbt", {})))
    text = np.zeros((1, *oracle.text_shape))
    with pytest.raises(ConfigError, match="one row"):
        oracle.evaluate(text=text, subset=[0, 1], views=np.zeros((3, 5)))
    with pytest.raises(ConfigError, match="lie in the image"):
        oracle.evaluate(text=text, subset=[0], views=[[0.6, 0, 0.5, 0.5, 0]])
    assert oracle.meter.used.candidate_evals == 0
