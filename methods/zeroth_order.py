"""Zeroth-order prompt tuning: any registered gradient estimator plus an update rule.

One step is one ask/tell round::

    z = method.ask()          # the estimator's points around x: (queries_per_step, dim)
    method.tell(z, evaluation)  # losses -> estimator.combine -> clip -> update rule

The estimator is a plug-in chosen by name (``methods.estimators``); the update
rule is one of

* ``adam``: ``torch.optim.Adam`` semantics, reproduced in numpy, float64.
  ``weight_decay`` is torch Adam's (L2: ``g <- g + wd x`` before the moments),
  which is what CBBT uses (guozix/cbbt: configs/trainers/CBBT/*.yaml, Dassl's
  ``torch.optim.Adam(weight_decay=5e-4)``); ``decoupled_weight_decay=True``
  gives AdamW instead (``x <- x (1 - lr wd)``).
* ``sgd``: ``x <- x - lr_k g``.
* ``spsa``: Spall's gain sequence, ``x <- x - a_k g`` with
  ``a_k = lr / (k + spsa_offset)^spsa_alpha`` and k counted from 1 (BlackVIP,
  ZIP: changdaeoh/BlackVIP: trainers/blackvip.py; METHODS.md section 4).

``lr_k`` of ``adam`` and ``sgd`` follows ``schedule``: constant, or cosine
annealing over the steps announced by ``plan()`` (Dassl's CosineAnnealingLR
stepped once per step instead of once per epoch), optionally after
``warmup_steps`` at ``warmup_lr`` (Dassl's constant warm-up); or
``cosine_epoch``, Dassl's schedule as CBBT runs it: the rate is constant
within an epoch (``plan()``'s steps per epoch, one pass over the training
set), ``warmup_epochs`` epochs at ``warmup_lr``, then epoch e at
lr (1 + cos(pi (e - warmup_epochs) / E)) / 2 over the E planned epochs
(ConstantWarmupScheduler over CosineAnnealingLR(T_max = E)). Without a plan
either cosine schedule is constant. Clipping acts on the raw estimate, before the
weight decay, as ``clip_grad_norm_`` before ``Adam.step`` does in CBBT.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from methods.base import Evaluation, Method, PromptConfig, SearchSpace
from methods.errors import ConfigError
from methods.estimators import EstimatorConfig, GradientEstimator, estimator_class, make_estimator

__all__ = [
    "DescentConfig",
    "Descent",
    "UpdateRule",
    "ZerothOrder",
    "ZerothOrderConfig",
]

UPDATES = ("adam", "sgd", "spsa")
SCHEDULES = ("constant", "cosine", "cosine_epoch")


@dataclass(frozen=True, kw_only=True)
class DescentConfig(PromptConfig):
    """A prompt, a mini-batch size and an update rule: the part shared by ZO methods and CoOp."""

    #: training images per request (None: the whole k-shot set).
    batch_size: int | None = None
    #: how requests' mini-batches are drawn: "epoch", per-epoch permutations cut into batches,
    #: the last partial one dropped (Dassl's loader, as CBBT, CoOp, ZIP and BlackVIP train);
    #: "independent", each request its own draw (v1).
    minibatches: str = "epoch"
    #: update rule: "adam" (torch Adam), "sgd" (x -= lr_k g) or "spsa" (x -= a_k g).
    update: str = "adam"
    #: learning rate; for "spsa" the gain a of a_k = a / (k + spsa_offset)^spsa_alpha.
    lr: float = 0.002
    #: Adam's beta1 (torch default).
    adam_beta1: float = 0.9
    #: Adam's beta2 (torch default).
    adam_beta2: float = 0.999
    #: Adam's epsilon (torch default).
    adam_eps: float = 1e-8
    #: weight decay; L2 added to the gradient (torch Adam / SGD) unless decoupled.
    weight_decay: float = 0.0
    #: decoupled weight decay x <- x (1 - lr_k wd) (AdamW) instead of L2.
    decoupled_weight_decay: bool = False
    #: "constant", "cosine" (over the steps given to plan()) or "cosine_epoch" (Dassl's,
    #: stepped per epoch); ignored by "spsa".
    schedule: str = "cosine"
    #: steps at warmup_lr before the schedule starts (Dassl's constant warm-up).
    warmup_steps: int = 0
    #: with "cosine_epoch": epochs at warmup_lr before the cosine (CBBT: 1).
    warmup_epochs: int = 0
    #: learning rate of the warm-up steps (CBBT and CoOp: 1e-5).
    warmup_lr: float = 1e-5
    #: clip the gradient estimate to this Euclidean norm (CBBT: 5); None: no clipping.
    clip_norm: float | None = None
    #: clip to norm sqrt(dim), g <- g min(1, sqrt(dim)/|g|) (ZIP); exclusive with clip_norm.
    clip_sqrt_dim: bool = False
    #: alpha of a_k = lr / (k + spsa_offset)^alpha (BlackVIP, ZIP: 0.4; Spall: 0.602).
    spsa_alpha: float = 0.4
    #: offset o of a_k (BlackVIP: 1, so a_1 = a / 2^alpha).
    spsa_offset: float = 1.0

    @property
    def planned_from_budget(self) -> bool:
        """A cosine (per step or per epoch) is planned over the budget's steps; SPSA's gains
        and a constant rate are not."""
        return self.update != "spsa" and self.schedule != "constant"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1 or None; got {self.batch_size}")
        if self.minibatches not in ("epoch", "independent"):
            raise ConfigError(f"minibatches must be 'epoch' or 'independent'; got "
                              f"{self.minibatches!r}")
        if self.update not in UPDATES:
            raise ConfigError(f"update must be one of {UPDATES}; got {self.update!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {SCHEDULES}; got {self.schedule!r}")
        for name in ("lr", "adam_eps", "warmup_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0; got {getattr(self, name)}")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must be in [0, 1); got {getattr(self, name)}")
        for name in ("weight_decay", "spsa_alpha", "spsa_offset"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0; got {getattr(self, name)}")
        if self.warmup_steps < 0 or self.warmup_epochs < 0:
            raise ConfigError(f"warmup_steps and warmup_epochs must be >= 0; got "
                              f"{self.warmup_steps}, {self.warmup_epochs}")
        if self.warmup_epochs and self.schedule != "cosine_epoch":
            raise ConfigError("warmup_epochs needs schedule = 'cosine_epoch' (warmup_steps "
                              "warms up a per-step schedule)")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ConfigError(f"clip_norm must be > 0 or None; got {self.clip_norm}")
        if self.clip_norm is not None and self.clip_sqrt_dim:
            raise ConfigError("clip_norm and clip_sqrt_dim exclude each other; set one")


class UpdateRule:
    """Turns a gradient (estimate) into a step: clipping, schedule, Adam / SGD / SPSA gains.

    State (Adam moments, step count) is numpy only, so pickling is trivial.
    """

    def __init__(self, config: DescentConfig, dim: int) -> None:
        self.config = config
        self.dim = dim
        self.m = np.zeros(dim)
        self.v = np.zeros(dim)
        self.t = 0  # completed steps
        #: steps per epoch, for "cosine_epoch" (told by the method's plan(); None: 1).
        self.per_epoch: int | None = None

    def learning_rate(self, t: int, planned: int | None) -> float:
        """The gain of step t (0-based) when ``planned`` steps are expected in all."""
        c = self.config
        if c.update == "spsa":
            # a_k = a / (k + o)^alpha, k = t + 1 (changdaeoh/BlackVIP: trainers/blackvip.py).
            return c.lr / (t + 1 + c.spsa_offset) ** c.spsa_alpha
        if c.schedule == "cosine_epoch":
            per = self.per_epoch or 1
            epoch = t // per
            if epoch < c.warmup_epochs:
                return c.warmup_lr
            if planned is None:
                return c.lr
            epochs = max(math.ceil(planned / per), 1)
            s = min(epoch - c.warmup_epochs, epochs - 1)
            return c.lr * 0.5 * (1.0 + math.cos(math.pi * s / epochs))
        if t < c.warmup_steps:
            return c.warmup_lr
        if c.schedule == "constant" or planned is None:
            return c.lr
        span = max(planned - c.warmup_steps, 1)
        # Past the plan the last gain is kept: a loop that overruns it must not stall at 0.
        s = min(t - c.warmup_steps, span - 1)
        return c.lr * 0.5 * (1.0 + math.cos(math.pi * s / span))

    def clip(self, g: np.ndarray) -> np.ndarray:
        c = self.config
        limit = math.sqrt(self.dim) if c.clip_sqrt_dim else c.clip_norm
        if limit is None:
            return g
        norm = float(np.linalg.norm(g))
        # torch.nn.utils.clip_grad_norm_: g * min(1, max_norm / (norm + 1e-6)).
        return g * min(1.0, limit / (norm + 1e-6))

    def step(self, x: np.ndarray, g: np.ndarray, planned: int | None) -> np.ndarray:
        """The next point from x and the (unclipped) gradient g; advances the step count."""
        c = self.config
        lr = self.learning_rate(self.t, planned)
        g = self.clip(np.asarray(g, dtype=np.float64))
        x = np.array(x, dtype=np.float64)
        if c.weight_decay:
            if c.decoupled_weight_decay:
                x *= 1.0 - lr * c.weight_decay
            else:
                g = g + c.weight_decay * x
        self.t += 1
        if c.update != "adam":
            return x - lr * g
        # torch.optim.Adam (single tensor, amsgrad off), in float64.
        b1, b2 = c.adam_beta1, c.adam_beta2
        self.m = b1 * self.m + (1 - b1) * g
        self.v = b2 * self.v + (1 - b2) * g * g
        denom = np.sqrt(self.v) / math.sqrt(1 - b2**self.t) + c.adam_eps
        return x - (lr / (1 - b1**self.t)) * self.m / denom

    def state_dict(self) -> dict[str, Any]:
        return {"m": self.m.copy(), "v": self.v.copy(), "t": self.t, "per_epoch": self.per_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.m = np.array(state["m"], dtype=np.float64)
        self.v = np.array(state["v"], dtype=np.float64)
        self.t = int(state["t"])
        self.per_epoch = state.get("per_epoch")


class Descent(Method):
    """Base of the single-point descent methods: x, an update rule and a pending ask.

    Subclasses define ``ask_size``, ``_propose()`` (the points of a step) and
    ``_gradient(z, evaluation, losses)`` (the gradient at x from their evaluation).
    ask() is idempotent until tell(): asking twice returns the same points.
    """

    def __init__(self, config: DescentConfig, space: SearchSpace, seed: int) -> None:
        if not isinstance(config, DescentConfig):
            raise ConfigError(
                f"{self.name}: config must be a DescentConfig; got {type(config).__name__}")
        super().__init__(config, space, seed)
        self.x = np.zeros(self.dim)
        self.rule = UpdateRule(config, self.dim)
        self.planned: int | None = None
        self.rng = np.random.default_rng(self.seed)
        self._pending: np.ndarray | None = None
        #: mean loss of the points of the last tell() (diagnostics only).
        self.last_loss: float | None = None

    # ---------------------------------------------------------------- interface
    @property
    def minibatch(self) -> int | None:
        return self.config.batch_size

    @property
    def steps(self) -> int:
        """Completed steps (tells)."""
        return self.rule.t

    def plan(self, asks: int | None, steps_per_epoch: int | None = None) -> None:
        if asks is not None and asks < 0:
            raise ConfigError(f"{self.name}: plan() needs asks >= 0 or None; got {asks}")
        self.planned = asks
        self.rule.per_epoch = steps_per_epoch

    def ask(self) -> np.ndarray:
        if self._pending is None:
            self._pending = np.asarray(self._propose(), dtype=np.float64)
        return self._pending.copy()

    def tell(self, z: np.ndarray, evaluation: Evaluation) -> None:
        if self._pending is None:
            raise ConfigError(f"{self.name}: tell() without a pending ask()")
        losses = self._check_tell(z, evaluation)
        z = np.asarray(z, dtype=np.float64)
        if z.shape != self._pending.shape:
            raise ConfigError(
                f"{self.name}: tell() got {z.shape[0]} points; the last ask() returned "
                f"{self._pending.shape[0]}"
            )
        g = self._gradient(z, evaluation, losses)
        if g.shape != (self.dim,):
            raise ConfigError(f"{self.name}: gradient of shape {g.shape}; expected ({self.dim},)")
        self.x = self.rule.step(self.x, g, self.planned)
        self.last_loss = float(losses.mean())
        self._pending = None

    def recommend(self) -> np.ndarray:
        return self.x.copy()

    def stop(self) -> dict[str, Any]:
        if not np.isfinite(self.x).all():
            return {"non_finite": f"x became non-finite after {self.steps} steps"}
        return {}

    @abstractmethod
    def _propose(self) -> np.ndarray:
        """(ask_size, dim) the points of the next step."""

    @abstractmethod
    def _gradient(self, z: np.ndarray, evaluation: Evaluation, losses: np.ndarray) -> np.ndarray:
        """(dim,) the gradient (estimate) at x from the evaluation of the asked points z."""

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "x": self.x.copy(),
            "rule": self.rule.state_dict(),
            "planned": self.planned,
            "rng": copy.deepcopy(self.rng.bit_generator.state),
            "pending": None if self._pending is None else self._pending.copy(),
            "last_loss": self.last_loss,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        x = np.array(state["x"], dtype=np.float64)
        if x.shape != (self.dim,):
            raise ConfigError(
                f"{self.name}: state of shape {x.shape}; this method has dim {self.dim}")
        self.x = x
        self.rule.load_state_dict(state["rule"])
        self.planned = state["planned"]
        self.rng.bit_generator.state = copy.deepcopy(state["rng"])
        pending = state["pending"]
        self._pending = None if pending is None else np.array(pending, dtype=np.float64)
        self.last_loss = state["last_loss"]


@dataclass(frozen=True, kw_only=True)
class ZerothOrderConfig(DescentConfig):
    """A zeroth-order method: an estimator by name, its settings, and the update rule.

    The estimator settings are those of ``methods.estimators.EstimatorConfig``
    under the same names; each estimator uses the ones its docstring names.
    """

    #: gradient estimator, a name in methods.estimators.ESTIMATORS.
    estimator: str = "gaussian"
    #: directions per estimate (the block size for "coordinate").
    q: int = 16
    #: smoothing radius (mu, beta, epsilon, c or h); None: the estimator's default.
    mu: float | None = None
    #: SPSA radius decay c_k = c / k^gamma; None: the estimator's default.
    gamma: float | None = None
    #: SPSA-GC momentum beta of m_k = beta m_{k-1} + g_k (BlackVIP: 0.9).
    momentum: float = 0.9
    #: SPSA perturbation law, "rademacher" or "segmented"; None: the estimator's default.
    spsa_distribution: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        estimator_class(self.estimator)  # an unknown name raises, listing the valid ones
        if self.q < 1:
            raise ConfigError(f"q must be >= 1; got {self.q}")
        if self.mu is not None and not self.mu > 0:
            raise ConfigError(f"mu must be > 0 or None; got {self.mu}")
        if self.gamma is not None and not self.gamma >= 0:
            raise ConfigError(f"gamma must be >= 0 or None; got {self.gamma}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1); got {self.momentum}")
        if self.spsa_distribution not in (None, "rademacher", "segmented"):
            raise ConfigError(
                "spsa_distribution must be 'rademacher', 'segmented' or None; "
                f"got {self.spsa_distribution!r}"
            )


def estimator_config(config: ZerothOrderConfig) -> EstimatorConfig:
    """The estimator's config: the fields of the method config that it has by name.

    An estimator class may name its own config class (``config_cls``, a subclass
    of EstimatorConfig); otherwise it is EstimatorConfig. The update-rule and
    prompt fields of the method config are never passed on.
    """
    cls = getattr(estimator_class(config.estimator), "config_cls", EstimatorConfig)
    values = {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(cls)
        if hasattr(config, f.name) and f.name not in _OWN_FIELDS
    }
    return cls(**values)


# Method-config fields that never go to an estimator even if it has a field of that name.
_OWN_FIELDS = frozenset(f.name for f in dataclasses.fields(DescentConfig)) | {"estimator"}


class ZerothOrder(Descent):
    """Zeroth-order descent from z = 0 with any registered estimator and update rule.

    ask() returns the estimator's points around x (``ask_size`` =
    ``estimator.queries_per_step``); tell() combines their losses into a
    gradient estimate, clips it and steps. recommend() is x.

    Example:
        >>> import numpy as np
        >>> from methods.base import Evaluation, SearchSpace
        >>> config = ZerothOrderConfig(estimator="gaussian", q=8, lr=0.05)
        >>> method = ZerothOrder(config, SearchSpace(20), seed=0)
        >>> target = np.full(20, 0.5)
        >>> method.plan(100)
        >>> for _ in range(100):
        ...     z = method.ask()
        ...     method.tell(z, Evaluation(losses=((z - target) ** 2).sum(axis=1)))
        >>> bool(((method.recommend() - target) ** 2).sum() < 0.5 * (target**2).sum())
        True
    """

    name: ClassVar[str] = "zo"

    def __init__(self, config: ZerothOrderConfig, space: SearchSpace, seed: int) -> None:
        if not isinstance(config, ZerothOrderConfig):
            raise ConfigError(
                f"{self.name}: config must be a ZerothOrderConfig; got {type(config).__name__}"
            )
        super().__init__(config, space, seed)
        self.estimator: GradientEstimator = make_estimator(
            config.estimator, estimator_config(config), self.dim
        )

    @property
    def ask_size(self) -> int:
        return int(self.estimator.queries_per_step)

    def _propose(self) -> np.ndarray:
        points = np.asarray(self.estimator.perturb(self.x.copy(), self.rng), dtype=np.float64)
        if points.shape != (self.ask_size, self.dim):
            raise ConfigError(
                f"estimator {self.config.estimator!r} proposed {points.shape}; expected "
                f"({self.ask_size}, {self.dim})"
            )
        return points

    def _gradient(self, z: np.ndarray, evaluation: Evaluation, losses: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator.combine(self.x.copy(), z, losses), dtype=np.float64)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["estimator"] = copy.deepcopy(self.estimator.state_dict())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.estimator.load_state_dict(copy.deepcopy(state["estimator"]))
