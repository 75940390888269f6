"""BBT on CLIP (Sun et al., ICML 2022; txsun1997/Black-Box-Tuning: bbt.py).

CMA-ES over a random text subspace (``methods.es_subspace``), deployed as the
release deploys it: the best of its best-so-far prompts on a dev set, scored
every 100 calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from methods.base import Evaluation, SearchSpace
from methods.errors import ConfigError
from methods.es_subspace import CMAESConfig, SubspaceCMAES

__all__ = ["BBT", "BBTConfig"]


@dataclass(frozen=True, kw_only=True)
class BBTConfig(CMAESConfig):
    """BBT adapted to CLIP: a text prompt only, d 500, CMA-ES popsize 20 (bbt.py)."""

    #: text context tokens (BBT uses 50 on RoBERTa; 8 as in CoOp/BPT-VLM for CLIP).
    n_text: int = 8
    #: no visual prompt (BBT tunes the text input only).
    n_visual: int = 0
    #: intrinsic dimension d (BBT 500).
    intrinsic_dim_text: int | None = 500
    #: BBT's CMA-ES population (bbt.py popsize 20).
    popsize: int = 20
    #: the deployed prompt: "dev", the best of the best-so-far prompts scored on a dev draw
    #: every dev_every candidate evaluations, as bbt.py deploys (each score costs one
    #: candidate evaluation of the budget); "train_loss": the best training loss (v1).
    select: str = "dev"
    #: candidate evaluations between dev scores (bbt.py eval_every 100).
    dev_every: int = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.select not in ("dev", "train_loss"):
            raise ConfigError(f"select must be 'dev' or 'train_loss'; got {self.select!r}")
        if self.dev_every < 1:
            raise ConfigError(f"dev_every must be >= 1; got {self.dev_every}")


class BBT(SubspaceCMAES):
    """BBT on CLIP: CMA-ES over the text subspace (see ``SubspaceCMAES`` for an example).

    Dev selection (``select = "dev"``, txsun1997/Black-Box-Tuning: bbt.py): after every
    ``dev_every`` candidate evaluations the best point so far (by training loss) is scored
    on the task's dev draw, and the point with the highest dev accuracy (the first of ties)
    is the one deployed. The release does not count those scores; here each costs one
    candidate evaluation of the budget (8,000 with 100 between them: 79 of them).

    Example:
        >>> import numpy as np
        >>> from methods.base import Evaluation, SearchSpace
        >>> method = BBT(BBTConfig(popsize=10, dev_every=20), SearchSpace(dim=5), seed=0)
        >>> for _ in range(2):
        ...     z = method.ask()
        ...     method.tell(z, Evaluation(losses=(z ** 2).sum(axis=1)))
        ...     point = method.dev_point()
        >>> bool((point == method._best.z).all())  # 20 evaluations: due
        True
        >>> method.tell_dev(point, 0.5)
        >>> bool((method.recommend() == point).all()) and method.dev_point() is None
        True
    """

    name: ClassVar[str] = "bbt"
    config_type: ClassVar[type[CMAESConfig]] = BBTConfig

    def __init__(self, config: BBTConfig, space: SearchSpace, seed: int) -> None:
        super().__init__(config, space, seed)
        self._told = 0  # candidate evaluations told
        self._next_dev = config.dev_every
        self._best_dev: tuple[np.ndarray, float] | None = None

    def tell(self, z: np.ndarray, evaluation: Evaluation) -> None:
        super().tell(z, evaluation)
        self._told += len(z)

    def dev_point(self) -> np.ndarray | None:
        if self.config.select != "dev" or self._told < self._next_dev:
            return None
        while self._next_dev <= self._told:
            self._next_dev += self.config.dev_every
        return self._best.z.copy()

    def tell_dev(self, z: np.ndarray, accuracy: float) -> None:
        if self._best_dev is None or accuracy > self._best_dev[1]:
            self._best_dev = (np.array(z, dtype=np.float64), float(accuracy))

    def recommend(self) -> np.ndarray:
        if self.config.select == "dev" and self._best_dev is not None:
            return self._best_dev[0].copy()
        return super().recommend()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "told": self._told, "next_dev": self._next_dev,
                "best_dev": self._best_dev}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._told, self._next_dev = int(state["told"]), int(state["next_dev"])
        self._best_dev = state["best_dev"]
