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
OLD_WAY = {"minibatches": "independent"}


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
    golden = json.loads(GOLDEN.read_text())
    assert _fingerprint(tiny_vit, name, OLD_WAY) == golden[name]
