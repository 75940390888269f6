"""The reference points of every table: zero-shot CLIP (no queries) and white-box CoOp.

Zero-shot asks nothing. CoOp is the white-box upper bound: it needs true
gradients and is marked ``black_box = False``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from methods.base import Evaluation, Method, PromptConfig
from methods.errors import ConfigError
from methods.zeroth_order import Descent, DescentConfig

__all__ = ["CoOp", "CoOpConfig", "ZeroShot", "ZeroShotConfig"]


@dataclass(frozen=True, kw_only=True)
class ZeroShotConfig(PromptConfig):
    """Zero-shot has no hyperparameters; the prompt fields only size the (unused) search space."""


class ZeroShot(Method):
    """Zero-shot CLIP with the data set's hand-written template: no queries, no search.

    ``zero_shot = True`` tells the loop to evaluate the template instead of a
    prompt; ask_size is 0 and stop() gives its reason at once.

    Example:
        >>> from methods.base import SearchSpace
        >>> method = ZeroShot(ZeroShotConfig(), SearchSpace(4), seed=0)
        >>> method.ask_size, method.ask().shape, sorted(method.stop())
        (0, (0, 4), ['zero_shot'])
    """

    name: ClassVar[str] = "zero-shot"
    #: the loop evaluates the data set's template, not recommend().
    zero_shot: ClassVar[bool] = True

    @property
    def ask_size(self) -> int:
        return 0

    def ask(self) -> np.ndarray:
        return np.zeros((0, self.dim))

    def tell(self, z: np.ndarray, evaluation: Evaluation) -> None:
        z = np.asarray(z)
        if z.size:
            raise ConfigError(f"{self.name}: asks nothing, tell() takes no points; got {z.shape}")

    def recommend(self) -> np.ndarray:
        return np.zeros(self.dim)

    def stop(self) -> dict[str, Any]:
        return {"zero_shot": "zero-shot queries nothing: evaluate the data set's template"}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state


@dataclass(frozen=True, kw_only=True)
class CoOpConfig(DescentConfig):
    """White-box CoOp (Zhou et al., IJCV 2022; KaiyangZhou/CoOp) on a glass-box oracle."""

    #: 4 context tokens (CoOp's "a photo of a" initialisation).
    n_text: int = 4
    #: initial context phrase (CoOp: "a photo of a").
    text_init: str | None = "a photo of a"
    #: the context is searched directly.
    intrinsic_dim_text: int | None = None
    #: images per step (CoOp: batch 32).
    batch_size: int | None = 32
    #: Adam (CoOp: SGD; Adam converges in far fewer steps at the budgets swept here).
    update: str = "adam"
    #: Adam learning rate (CoOp's SGD: 0.002; 0.02 is what works on the embedded tiny model).
    lr: float = 0.02
    #: L2 weight decay (CoOp: 5e-4).
    weight_decay: float = 5e-4
    #: cosine over the planned steps (CoOp: cosine over 200 epochs).
    schedule: str = "cosine"


class CoOp(Descent):
    """White-box CoOp, the upper bound: NOT black-box, it needs true gradients.

    ask() returns the current context offset (ask_size 1); tell() takes
    ``evaluation.gradients[0]`` from a glass-box oracle and steps Adam.

    Example:
        >>> import numpy as np
        >>> from methods.base import Evaluation, SearchSpace
        >>> method = CoOp(CoOpConfig(lr=0.1), SearchSpace(10), seed=0)
        >>> target = np.ones(10)
        >>> method.plan(50)
        >>> for _ in range(50):
        ...     z = method.ask()
        ...     ev = Evaluation(losses=((z - target) ** 2).sum(1), gradients=2 * (z - target))
        ...     method.tell(z, ev)
        >>> bool(np.abs(method.recommend() - target).max() < 0.1)
        True
    """

    name: ClassVar[str] = "coop"
    black_box: ClassVar[bool] = False
    needs_gradient: ClassVar[bool] = True

    @property
    def ask_size(self) -> int:
        return 1

    def _propose(self) -> np.ndarray:
        return self.x[None, :].copy()

    def _gradient(self, z: np.ndarray, evaluation: Evaluation, losses: np.ndarray) -> np.ndarray:
        if evaluation.gradients is None:
            raise ConfigError(f"{self.name}: tell() needs true gradients (a glass-box oracle)")
        g = np.asarray(evaluation.gradients, dtype=np.float64)
        if g.shape != (1, self.dim) or not np.isfinite(g).all():
            raise ConfigError(
                f"{self.name}: gradients must be finite, of shape (1, {self.dim}); got {g.shape}")
        return g[0]
