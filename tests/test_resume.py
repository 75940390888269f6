"""A trial cut short goes on from its last budget checkpoint and ends as if never stopped.

The trial's own code path (``run_setting`` on the embedded model, no Ray): run a
setting through; run it again, keep its state at a checkpoint as the checkpoint
store would (bytes), drop everything, and go on from those bytes. Rows, counts and
the recommendation must be the same; the resumed seeds say they restarted.
"""

from __future__ import annotations

import numpy as np
import pytest

from sweep.budget import BudgetSpec
from sweep.tuning.trial import TrialSetting, TrialState, run_setting

pytestmark = pytest.mark.slow

#: One of each kind: CMA-ES on text and visual prompts, ES on text, SPSA on mini-batches,
#: and CBBT's estimator with its adapter (torch, its own generator).
SETTINGS = {
    "bpt-vlm": ({"popsize": 6, "intrinsic_dim_text": 20, "intrinsic_dim_visual": 20},
                BudgetSpec(unit="candidate_evals", limit=60)),
    "bbt": ({"popsize": 5, "intrinsic_dim_text": 20}, BudgetSpec(unit="candidate_evals", limit=50)),
    "zip": ({}, BudgetSpec(unit="calls", limit=40)),
    "cbbt": ({"q": 4}, BudgetSpec(unit="candidate_evals", limit=50)),
}


def _final(setting, resume=None):
    *_, (index, outcomes) = run_setting(setting, resume=resume)
    return index, outcomes


@pytest.mark.parametrize("method", sorted(SETTINGS))
def test_a_trial_resumed_from_its_checkpoint_ends_as_one_never_stopped(method):
    params, budget = SETTINGS[method]
    setting = TrialSetting(method, params, "digits", None, 4, (0, 1), budget, checkpoints=4)
    last, whole = _final(setting)

    run = run_setting(setting)
    for _ in range(2):  # two checkpoints, then the process is lost
        index, outcomes = next(run)
    blob = TrialState(setting, index + 1, [o.saved() for o in outcomes]).to_bytes()
    run.close()
    del run, outcomes
    resumed_last, resumed = _final(setting, TrialState.from_bytes(blob))

    assert resumed_last == last
    for a, b in zip(whole, resumed):
        assert (a.seed, a.status, b.status) == (b.seed, "ok", "ok"), (a.error, b.error)
        assert [r.queries for r in a.records] == [r.queries for r in b.records]
        for field in ("val_acc", "test_acc", "train_loss"):
            np.testing.assert_array_equal([getattr(r, field) for r in a.records],
                                          [getattr(r, field) for r in b.records], err_msg=field)
        np.testing.assert_array_equal(a.result.recommendation, b.result.recommendation)
        assert a.result.used == b.result.used == a.records[-1].queries
        assert (a.restarts, b.restarts) == (0, 1) and b.report().restarts == 1
