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
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from sweep.errors import BudgetExceededError, ConfigError

__all__ = ["UNITS", "BudgetSpec", "QueryCounts"]

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
