"""The one ask/evaluate/tell loop: budget checkpoints, stopping, scoring."""

from __future__ import annotations

import numpy as np
import pytest

import methods
from methods.base import Evaluation, SearchSpace
from sweep.budget import BudgetSpec, checkpoint_schedule
from sweep.run import SplitScorer, iter_run, run_method
from sweep.testing import QuadraticObjective


@pytest.mark.parametrize("limit,first", [(3600, 30), (600, 257), (5000, 2), (10, 10)])
def test_checkpoint_schedule_reaches_the_budget(limit, first):
    levels = checkpoint_schedule(limit, first, 8)
    assert levels == sorted(set(levels)) and levels[-1] == limit and levels[0] >= min(first, limit)
    assert len(levels) == min(8, max(1, limit // first))
    # Levels are at least one ask apart, so each is reached by a different ask.
    assert all(b - a >= first for a, b in zip(levels[:-1], levels[1:-1]))


def _bbt(asks: int, seed: int = 0):
    space = SearchSpace(dim=40)
    method = methods.REGISTRY.create("bbt", {"sigma0": 0.1}, space, seed)
    objective = QuadraticObjective(40, BudgetSpec(limit=asks * method.ask_size + 7), seed=1)
    return method, objective


class FakeScorer(SplitScorer):
    """Scores a point by -f(z) on the quadratic, so checkpoints can be checked."""

    def __init__(self, objective):
        self.objective = objective
        self.calls = []

    def __call__(self, method, z):
        self.calls.append(z.copy())
        value = float(QuadraticObjective(self.objective.dim, seed=1).value(z)[0])
        return -value, -2 * value, value


def test_run_records_checkpoints_up_to_the_budget():
    method, objective = _bbt(asks=64)
    scorer = FakeScorer(objective)
    seen = []
    result = run_method(method, objective, scorer, checkpoints=8, on_checkpoint=seen.append)
    assert len(result.checkpoints) == 8 and seen == result.checkpoints
    used = [r.queries.candidate_evals for r in result.checkpoints]
    assert used == sorted(used) and used[-1] == objective.used.candidate_evals <= objective.budget.limit
    assert "budget" in result.stop_reasons
    assert [r.checkpoint for r in result.checkpoints] == list(range(len(result.checkpoints)))
    assert result.checkpoints[-1].val_acc == pytest.approx(-QuadraticObjective(40, seed=1).value(
        result.recommendation)[0])
    assert np.isfinite([r.train_loss for r in result.checkpoints]).all()


def test_iter_run_yields_the_same_records_as_run_method():
    a = run_method(*_bbt(asks=20))
    gen = iter_run(*_bbt(asks=20))
    records = list(gen)
    assert [r.queries for r in records] == [r.queries for r in a.checkpoints]


def test_a_method_that_asks_nothing_gets_one_checkpoint():
    space = SearchSpace(dim=5)
    method = methods.REGISTRY.create("zero-shot", {}, space, 0)
    scorer = SplitScorer(lambda *a: pytest.fail("no prompt to score"),
                         zero_shot=lambda split: Evaluation(losses=np.zeros(1), accuracies=np.array([0.5])))
    result = run_method(method, QuadraticObjective(5, BudgetSpec(limit=100)), scorer)
    assert len(result.checkpoints) == 1 and result.checkpoints[0].val_acc == 0.5
    assert result.used.candidate_evals == 0 and result.stop_reasons


def test_adapter_methods_are_scored_through_predict():
    class Adapter:
        needs_features = True

        def predict(self, ev):
            return -ev.image_features[0] @ ev.text_features[0].T  # deliberately inverted

    feats = np.eye(3)
    ev = Evaluation(losses=np.zeros(1), text_features=feats[None], image_features=feats[None],
                    labels=np.arange(3), logit_scale=1.0)
    scorer = SplitScorer(lambda split, z, features: ev)
    assert scorer.score(Adapter(), np.zeros(2), "val") < 1.0


def test_epoch_batches_are_dassls_permutations_with_drop_last_and_resume_exactly():
    from sweep.run.objective import EpochBatches

    batches = EpochBatches(np.random.default_rng(3))
    epochs = [[batches.next(10, 3) for _ in range(3)] for _ in range(3)]  # 10 // 3 = 3 a epoch
    for epoch in epochs:
        seen = np.concatenate(epoch)
        assert len(seen) == len(set(seen)) == 9  # each image once, the 10th dropped
        assert all((b == np.sort(b)).all() for b in epoch)
    assert len({tuple(np.concatenate(e)) for e in epochs}) == 3  # reshuffled every epoch
    # A checkpoint keeps the stream's state and the epoch's; a fresh sampler goes on exactly.
    batches.next(10, 3)  # mid-epoch
    rng_state, state = batches.rng.bit_generator.state, batches.state()
    ahead = [batches.next(10, 3) for _ in range(4)]
    fresh = EpochBatches(np.random.default_rng(99))
    fresh.rng.bit_generator.state = rng_state
    fresh.restore(state)
    assert all((a == b).all() for a, b in zip(ahead, [fresh.next(10, 3) for _ in range(4)]))
    assert batches.next(10, 10) is None and batches.next(10, None) is None
