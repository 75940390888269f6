"""The hyperparameters a sweep can search, and each method's default ranges.

A ``Param`` is one sampled hyperparameter (a numeric range or a set of
choices), possibly conditional on another one. ``DEFAULT_SPACES`` gives each
registered method its default space, centred on the paper's published value
(``reference/METHODS.md``); ``sweep.spec.spaces.make_space`` applies a
specification's overrides to it and checks the result.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from methods.estimators import ESTIMATORS
from sweep.errors import ConfigError

if TYPE_CHECKING:
    import optuna

__all__ = ["DEFAULT_SPACES", "Param"]

_KINDS = ("float", "int", "categorical")


@dataclass(frozen=True, kw_only=True)
class Param:
    """One sampled hyperparameter: a numeric range or a set of choices.

    Example:
        >>> import optuna
        >>> trial = optuna.trial.FixedTrial({"sigma0": 0.5})
        >>> Param(name="sigma0", kind="float", low=0.1, high=2.0, log=True).suggest(trial)
        0.5
    """

    #: the config field it sets; also its Optuna name (after the space's prefix).
    name: str
    #: "float" or "int" (a range), or "categorical" (``choices``).
    kind: str
    #: lower end of the range (inclusive); None for categorical.
    low: float | None = None
    #: upper end of the range (inclusive); None for categorical.
    high: float | None = None
    #: sample the range on a log scale (low must then be > 0).
    log: bool = False
    #: grid step of the range; None is continuous (float) or 1 (int).
    step: float | None = None
    #: the values of a categorical parameter (scalars Optuna can store).
    choices: tuple[Any, ...] = ()
    #: (field, predicate): sampled only if predicate(value of field) holds, the value
    #: being the sampled one, else the fixed one, else the config default. Module-level
    #: predicates keep the space picklable (Ray checkpoints its searcher).
    when: tuple[str, Callable[[Any], bool]] | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ConfigError(
                f"parameter {self.name}: kind must be one of {_KINDS}; got {self.kind!r}")
        if self.kind == "categorical":
            if not self.choices:
                raise ConfigError(f"parameter {self.name}: a categorical parameter needs choices")
        elif self.low is None or self.high is None or not self.low <= self.high:
            raise ConfigError(
                f"parameter {self.name}: a range needs low <= high; got {self.low!r}, {self.high!r}"
            )

    def suggest(self, trial: optuna.Trial, prefix: str = "") -> Any:
        """Draw this parameter from ``trial`` under the Optuna name ``prefix + name``."""
        name = prefix + self.name
        if self.kind == "categorical":
            return trial.suggest_categorical(name, list(self.choices))
        if self.kind == "int":
            step = 1 if self.step is None else int(self.step)
            return trial.suggest_int(name, int(self.low), int(self.high), step=step, log=self.log)
        return trial.suggest_float(
            name, float(self.low), float(self.high), step=self.step, log=self.log
        )

    def extremes(self) -> tuple[Any, ...]:
        """The values that bound what ``suggest`` can return: both ends, or every choice."""
        if self.kind == "categorical":
            return self.choices
        return (self.low, self.high)


# ---------------------------------------------------------------- conditions
# Module-level so that spaces pickle by reference.


def _positive(value: Any) -> bool:
    return value is not None and value > 0


def _is_spsa(estimator: Any) -> bool:
    return estimator in ("spsa", "spsa_gc")


def _is_spsa_gc(estimator: Any) -> bool:
    return estimator == "spsa_gc"


# ---------------------------------------------------------------- default spaces

#: Subspace dimensions (BPT-VLM and BBT publish 500; smaller ones are cheaper for CMA-ES,
#: whose covariance is d x d).
_DIMS = (50, 100, 250, 500, 1000)
_DIM_TEXT = Param(name="intrinsic_dim_text", kind="categorical", choices=_DIMS,
                  when=("n_text", _positive))
_DIM_VISUAL = Param(name="intrinsic_dim_visual", kind="categorical", choices=_DIMS,
                    when=("n_visual", _positive))

# Evolution strategies: step size around the published 1, population around 20-30.
_SIGMA0 = Param(name="sigma0", kind="float", low=0.1, high=2.0, log=True)
_POPSIZE = Param(name="popsize", kind="int", low=10, high=50, step=5)
_CMA = (_SIGMA0, _POPSIZE, _DIM_TEXT, _DIM_VISUAL)
# pypop7's ES configs name the same two settings differently.
_PYPOP = (
    Param(name="sigma", kind="float", low=0.1, high=2.0, log=True),
    Param(name="n_individuals", kind="int", low=10, high=50, step=5),
    _DIM_TEXT,
    _DIM_VISUAL,
)

# Zeroth-order descent. A learning rate is Adam's step or SPSA's gain a of a_k = a / (k+o)^alpha;
# published values are 0.002 (CBBT, Adam) and 0.01 (ZIP, BlackVIP, SPSA).
_LR = Param(name="lr", kind="float", low=1e-4, high=1e-1, log=True)
# Smoothing radius: CBBT's sphere default max(1/d, 1e-3), ZIP's and BlackVIP's c = 0.01.
_MU = Param(name="mu", kind="float", low=1e-3, high=1e-1, log=True)
# One-sided estimators spend q + 1 queries per step (CBBT publishes 256).
_Q_DIRECTIONS = Param(name="q", kind="categorical", choices=(4, 8, 16, 32, 64, 128, 256))
# SPSA spends 2q queries per step and publishes q = 5; 256 draws would be 512 queries a step.
_Q_SPSA = Param(name="q", kind="categorical", choices=(1, 2, 5, 10, 20))
# Radius decay c_k = c / k^gamma: Spall 0.101, ZIP 0.1, BlackVIP 0.2.
_GAMMA = Param(name="gamma", kind="float", low=0.05, high=0.3, when=("estimator", _is_spsa))
# Gradient-correction beta of SPSA-GC: BlackVIP 0.9, 0.3-0.95 on some data sets.
_MOMENTUM = Param(name="momentum", kind="float", low=0.3, high=0.95,
                  when=("estimator", _is_spsa_gc))

_CBBT = (
    # CBBT's one-sided family: the sphere estimator it publishes and its close relatives.
    Param(name="estimator", kind="categorical",
          choices=("sphere", "gaussian", "orthogonal", "antithetic")),
    _Q_DIRECTIONS,
    _MU,
    _LR,
)
_CBBT_ADAPTER = (
    *_CBBT,
    # The adapter is trained locally with AdamW (CBBT's Tip config: 1e-3).
    Param(name="adapter_lr", kind="float", low=1e-4, high=1e-2, log=True),
)
_ZO = (
    Param(name="estimator", kind="categorical", choices=tuple(sorted(ESTIMATORS))),
    _Q_DIRECTIONS,
    _MU,
    _LR,
    _GAMMA,
    _MOMENTUM,
)
_ZIP = (
    _Q_SPSA,
    _MU,
    _GAMMA,
    _LR,
    # ZIP's ID 500 (417 variables at rank 5) and half and twice it.
    Param(name="intrinsic_dim_text", kind="categorical", choices=(250, 500, 1000),
          when=("n_text", _positive)),
)
_BLACKVIP = (_Q_SPSA, _MU, _GAMMA, _MOMENTUM, _LR)
# CraFT's and SharpZO's subspace: d 512 and the fixed projection std, 0.2 or 1 by data set.
_CRAFT_SUBSPACE = (
    Param(name="intrinsic_dim_text", kind="categorical", choices=(128, 256, 512)),
    Param(name="projection_std", kind="categorical", choices=(0.2, 1.0)),
)
_CRAFT = (
    # sigma0: 1, or 0.02 on four data sets (craft_configs/*.yaml).
    Param(name="sigma0", kind="float", low=0.01, high=2.0, log=True),
    # The KL weight: its released values by data set.
    Param(name="weight", kind="categorical", choices=(0.0, 0.001, 0.01, 0.1, 1.0)),
    Param(name="head_lr", kind="float", low=1e-4, high=1e-2, log=True),
    *_CRAFT_SUBSPACE,
)
_SHARPZO = (
    # sigma0 0.4 and rho 0.1 in the release's command; its lr and radius 1e-3.
    Param(name="sigma0", kind="float", low=0.05, high=2.0, log=True),
    Param(name="rho", kind="float", low=0.01, high=1.0, log=True),
    Param(name="lr", kind="float", low=1e-4, high=1e-2, log=True),
    # Stage 1's share of the budget, around the release's 0.21, chosen on validation.
    Param(name="stage1_fraction", kind="float", low=0.05, high=0.8),
    *_CRAFT_SUBSPACE,
)

#: Each registered method's default space. A method missing here samples nothing unless the
#: sweep specification gives it a space.
DEFAULT_SPACES: Mapping[str, tuple[Param, ...]] = MappingProxyType({
    "bpt-vlm": _CMA,
    "bpt-vlm-deep": _CMA,
    "bbt": _CMA,
    "bpt-vlm-lmcmaes": _PYPOP,
    "bpt-vlm-mmes": _PYPOP,
    "bpt-vlm-lmmaes": _PYPOP,
    "cbbt": _CBBT,
    "cbbt-adapter": _CBBT_ADAPTER,
    "cbbt-tip": _CBBT_ADAPTER,
    "zo": _ZO,
    "zip": _ZIP,
    "blackvip-tokens": _BLACKVIP,
    "craft": _CRAFT,
    "sharpzo": _SHARPZO,
    # White-box CoOp: its Adam learning rate only (published 0.002 for SGD; 0.02 here).
    "coop": (_LR,),
    # Zero-shot has no hyperparameters.
    "zero-shot": (),
})
