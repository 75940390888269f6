"""Query accounting: the four units the field counts in, and a budget in one of them.

A query is what a model-as-a-service would bill:

- ``candidate_evals``: one prompt evaluated in one request (on the whole k-shot
  training set, or on the mini-batch the request names): BBT, BPT-VLM, CraFT.
- ``calls``: one forward of one mini-batch of at most ``batch_size`` images for
  one candidate: ZIP. A candidate on m images costs ceil(m / batch_size) calls.
- ``images``: images sent to the image encoder, one per image per candidate,
  whether or not this implementation caches their features (the service
  would encode them).
- ``text_sequences``: class prompts sent to the text encoder, one per class
  per candidate.

``QueryMeter`` is the one place a request is priced, checked against the
budget and counted: the local oracle, the pooled one and the test stand-ins
all count through it. A run is recorded at checkpoints of its budget
(``checkpoint_schedule``, ``CheckpointRecord``): the loop writes them, the
results store them as rows of the curves table.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from sweep.errors import BudgetExceededError, ConfigError

__all__ = [
    "UNITS", "BudgetSpec", "CheckpointRecord", "Metered", "QueryCounts", "QueryMeter",
    "checkpoint_schedule",
]

UNITS = ("candidate_evals", "calls", "images", "text_sequences")


@dataclass(frozen=True)
class QueryCounts:
    """Queries in each unit. Adding two gives their total."""

    candidate_evals: int = 0
    calls: int = 0
    images: int = 0
    text_sequences: int = 0

    def __add__(self, other: QueryCounts) -> QueryCounts:
        return QueryCounts(*(getattr(self, u) + getattr(other, u) for u in UNITS))

    def __getitem__(self, unit: str) -> int:
        if unit not in UNITS:
            raise KeyError(f"unknown query unit {unit!r}; valid units: {', '.join(UNITS)}")
        return int(getattr(self, unit))

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @staticmethod
    def of_request(candidates: int, images: int, classes: int, batch_size: int) -> QueryCounts:
        """What evaluating ``candidates`` prompts on ``images`` images of ``classes`` classes costs."""
        return QueryCounts(
            candidate_evals=candidates,
            calls=candidates * math.ceil(images / batch_size),
            images=candidates * images,
            text_sequences=candidates * classes,
        )


@dataclass(frozen=True, kw_only=True)
class BudgetSpec:
    """A query budget: at most ``limit`` queries in ``unit`` (None: unlimited)."""

    #: the unit the budget is enforced in; one of UNITS.
    unit: str = "candidate_evals"
    #: the largest number of queries allowed in that unit, or None for no limit.
    limit: int | None = None
    #: images per call (the mini-batch of the ``calls`` unit).
    batch_size: int = 128

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ConfigError(f"budget unit must be one of {', '.join(UNITS)}; got {self.unit!r}")
        if self.limit is not None and (
            not isinstance(self.limit, int) or isinstance(self.limit, bool) or self.limit < 0
        ):
            raise ConfigError(f"budget limit must be a non-negative integer or None; got {self.limit!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"budget batch_size must be a positive integer; got {self.batch_size!r}")

    def check(self, used: QueryCounts, request: QueryCounts) -> None:
        """Raise BudgetExceededError if ``request`` on top of ``used`` would pass the limit."""
        if self.limit is None:
            return
        after = used[self.unit] + request[self.unit]
        if after > self.limit:
            raise BudgetExceededError(
                f"request of {request[self.unit]} {self.unit} refused: {used[self.unit]} of "
                f"{self.limit} already used"
            )

    def remaining(self, used: QueryCounts) -> int | None:
        return None if self.limit is None else self.limit - used[self.unit]


class QueryMeter:
    """The queries of one oracle: its budget, the training channel's counts and the evaluation's.

    A request is charged when it is accepted, before anything is computed (a
    service bills the request it takes): ``charge`` refuses one that would pass
    the budget with ``BudgetExceededError`` and otherwise counts it, once.
    Validation and test requests are counted apart (``charge_eval``), never
    against the budget.

    Args:
        budget: the budget (None: unlimited, in candidate evaluations).
        images: training images, the size of a request without a mini-batch.
        classes: classes, one text sequence each per candidate.
    """

    def __init__(self, budget: BudgetSpec | None, images: int, classes: int) -> None:
        self.budget = budget or BudgetSpec()
        self.images = images
        self.classes = classes
        self.used = QueryCounts()
        self.eval_used = QueryCounts()

    def cost(self, candidates: int, images: int | None = None) -> QueryCounts:
        """What ``candidates`` prompts on ``images`` images (default: all training images) cost."""
        m = self.images if images is None else images
        return QueryCounts.of_request(candidates, m, self.classes, self.budget.batch_size)

    def fits(self, cost: QueryCounts) -> bool:
        """Whether a request of ``cost`` stays within the budget."""
        limit = self.budget.limit
        return limit is None or self.used[self.budget.unit] + cost[self.budget.unit] <= limit

    def charge(self, cost: QueryCounts) -> None:
        """Count a training request; BudgetExceededError (and nothing counted) if it does not fit."""
        self.budget.check(self.used, cost)
        self.used = self.used + cost

    def charge_eval(self, candidates: int, images: int) -> None:
        """Count a validation or test request of ``candidates`` prompts on ``images`` images."""
        self.eval_used = self.eval_used + self.cost(candidates, images)

    def remaining(self) -> int | None:
        """Queries left in the budget's unit (None: unlimited)."""
        return self.budget.remaining(self.used)


class Metered:
    """What everything that answers counted queries shows of its ``meter``: oracles and stand-ins."""

    meter: QueryMeter

    @property
    def budget(self) -> BudgetSpec:
        return self.meter.budget

    @property
    def used(self) -> QueryCounts:
        """Training queries so far, in every unit."""
        return self.meter.used

    @property
    def eval_used(self) -> QueryCounts:
        """Validation and test queries so far (never against the budget)."""
        return self.meter.eval_used

    def remaining(self) -> int | None:
        """Queries left in the budget's unit (None: unlimited)."""
        return self.meter.remaining()

    def cost(self, candidates: int, minibatch: int | None = None) -> QueryCounts:
        """What ``candidates`` prompts on a mini-batch of ``minibatch`` training images cost.

        None, or a mini-batch as large as the training set, is the whole training set.
        """
        m = self.meter.images
        return self.meter.cost(candidates, m if minibatch is None else min(minibatch, m))


# ---------------------------------------------------------------- checkpoints


@dataclass(frozen=True)
class CheckpointRecord:
    """The state of a run when the budget in its unit reached a checkpoint (a curves row)."""

    checkpoint: int  # 0-based index in the schedule
    queries: QueryCounts
    train_loss: float  # best loss of the most recent request (nan before any)
    val_acc: float
    test_acc: float
    wall_s: float
    #: the validation loss of what the method deploys (``SplitScorer``; nan: not measured).
    val_loss: float = float("nan")


def checkpoint_schedule(limit: int, first: int, count: int = 8) -> list[int]:
    """``count`` budget levels, geometric in the number of asks, the last at ``limit``.

    ``first`` is the cost of one ask: levels are whole numbers of asks apart,
    so that every level is reached by a different ask and a run records
    ``count`` checkpoints (all of them, when the budget allows fewer asks).
    """
    if limit <= 0:
        return [0]
    first = max(1, min(first, limit))
    asks = max(1, limit // first)
    if asks <= count:
        ks = list(range(1, asks + 1))
    else:
        ks = [int(round(asks ** (i / (count - 1)))) for i in range(count)]
        for i in range(1, count):  # strictly increasing from the bottom...
            ks[i] = max(ks[i], ks[i - 1] + 1)
        ks[-1] = asks
        for i in range(count - 2, -1, -1):  # ...and room left below the top
            ks[i] = min(ks[i], ks[i + 1] - 1)
    levels = [k * first for k in ks]
    levels[-1] = limit
    return levels
