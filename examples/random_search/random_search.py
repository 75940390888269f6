"""A method of one's own, outside promptsweep: (1+lambda) random search in BBT's text subspace.

Each ask draws ``popsize`` Gaussian steps of size ``sigma`` around the best point
so far; each tell keeps the best of them if it beats the incumbent, and shrinks
``sigma`` by ``decay`` when none does. It is here to show the method contract
(docs/own-method.md), not to win: a sweep runs it beside the baselines by naming
this file in its specification (``plugins = ["random_search.py"]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from methods import Evaluation, Method, MethodEntry, PromptConfig, SearchSpace
from sweep.spec import Param


@dataclass(frozen=True, kw_only=True)
class RandomSearchConfig(PromptConfig):
    """The hyperparameters and their defaults (a sweep samples those of ``SPACES``)."""

    #: 4 text context tokens, searched in a random subspace of 50 dimensions (BBT's).
    n_text: int = 4
    intrinsic_dim_text: int | None = 50
    #: candidates per ask.
    popsize: int = 10
    #: the step's standard deviation at the start.
    sigma: float = 0.5
    #: sigma's factor after an ask that found nothing better.
    decay: float = 0.9


class RandomSearch(Method):
    """(1+lambda) random search: the method contract in 60 lines."""

    name = "random-search"

    def __init__(self, config: RandomSearchConfig, space: SearchSpace, seed: int) -> None:
        super().__init__(config, space, seed)
        self.rng = np.random.default_rng(seed)
        self.best = np.zeros(space.dim)
        self.best_loss = np.inf
        self.sigma = config.sigma

    @property
    def ask_size(self) -> int:
        return self.config.popsize

    def ask(self) -> np.ndarray:
        steps = self.rng.standard_normal((self.config.popsize, self.dim))
        if not np.isfinite(self.best_loss):
            steps[0] = 0.0  # the start itself, once: the incumbent is then a measured point
        return self.best + self.sigma * steps

    def tell(self, z: np.ndarray, evaluation: Evaluation) -> None:
        z = np.asarray(z, dtype=np.float64)
        losses = np.asarray(evaluation.losses, dtype=np.float64)  # finite: the loop ranks NaN
        i = int(np.argmin(losses))
        if losses[i] < self.best_loss:
            self.best, self.best_loss = z[i].copy(), float(losses[i])
        else:
            self.sigma *= self.config.decay

    def recommend(self) -> np.ndarray:
        return self.best.copy()

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "best": self.best.copy(),
                "best_loss": self.best_loss, "sigma": self.sigma}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.best, self.best_loss = np.array(state["best"]), float(state["best_loss"])
        self.sigma = float(state["sigma"])


#: What promptsweep reads from this module: its methods, and their default search spaces.
METHODS = [MethodEntry("random-search", RandomSearchConfig, RandomSearch,
                       "(1+lambda) random search in BBT's text subspace", version=1)]
SPACES = {"random-search": [Param(name="sigma", kind="float", low=0.05, high=2.0, log=True),
                            Param(name="popsize", kind="int", low=4, high=20, step=4)]}
