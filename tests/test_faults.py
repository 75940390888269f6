"""What happens when the oracle misbehaves: the non-finite-loss policy, end to end."""

from __future__ import annotations

import numpy as np
import pytest

from methods.base import Evaluation
from sweep.budget import BudgetSpec
from sweep.oracle import ClipOracle
from sweep.objective import NonFiniteLossError, rank_nonfinite_worst
from sweep.trainable import TrialSetting, _outcome_dict, run_setting


def test_nonfinite_losses_rank_worst_of_their_request():
    ev = Evaluation(losses=np.array([0.5, np.nan, 2.0, np.inf, -np.inf]), accuracies=np.zeros(5))
    fixed, replaced = rank_nonfinite_worst(ev)
    np.testing.assert_array_equal(fixed.losses, [0.5, 2.0, 2.0, 2.0, 2.0])
    assert replaced == 3 and fixed.accuracies is ev.accuracies
    same, none = rank_nonfinite_worst(Evaluation(losses=np.array([1.0, 2.0])))
    assert none == 0 and np.array_equal(same.losses, [1.0, 2.0])
    with pytest.raises(NonFiniteLossError, match="all 2 losses"):
        rank_nonfinite_worst(Evaluation(losses=np.array([np.nan, np.inf])))


@pytest.fixture
def nan_oracle(monkeypatch):
    """The real oracle, but the first candidate of every request comes back NaN."""
    original = ClipOracle.evaluate

    def evaluate(self, *args, **kwargs):
        ev = original(self, *args, **kwargs)
        losses = ev.losses.copy()
        losses[0] = np.nan
        return Evaluation(**{**ev.__dict__, "losses": losses})

    monkeypatch.setattr(ClipOracle, "evaluate", evaluate)


def test_a_trial_survives_nan_losses_counts_the_queries_and_records_them(nan_oracle):
    setting = TrialSetting("bbt", {"popsize": 6, "intrinsic_dim_text": 20}, "digits", None, 4, (1,),
                           BudgetSpec(limit=60), checkpoints=8)
    *_, (_, outcomes) = run_setting(setting)
    out = outcomes[0]
    assert out.status == "ok", out.error
    assert out.nonfinite_losses == 10  # one per request: 60 queries / 6 per ask
    assert out.result.used.candidate_evals == 60  # the NaN queries still count
    assert _outcome_dict(out, "candidate_evals")["nonfinite_losses"] == 10
    assert np.isfinite([r.train_loss for r in out.records]).all()


def test_launch_refuses_a_bad_spec_with_one_line_and_status_2(tmp_path, capsys):
    from sweep.launch import main

    spec = tmp_path / "bad.toml"
    spec.write_text('name = "x"\n[budget]\nlimt = 10\n[search]\nmethods = ["bbt"]\n')
    assert main([str(spec), "--results", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "budget.limt" in err[0] and "limit" in err[0]
    assert not (tmp_path / "results").exists()
