"""The mathematics of black-box prompt tuning: pure numpy/torch, no Ray, no open_clip.

``REGISTRY`` maps every method name to its config and class; it is filled
here, explicitly, from each module's ``register_all``.
"""

from methods import baselines, es_pypop, es_subspace, zeroth_order, zo_adapter
from methods.base import Evaluation, Method, PromptConfig, SearchSpace
from methods.errors import BudgetExceededError, ConfigError, PromptTuningError
from methods.registry import REGISTRY, Registry

for _module in (es_subspace, es_pypop, zeroth_order, zo_adapter, baselines):
    _module.register_all(REGISTRY)
del _module

__all__ = [
    "REGISTRY",
    "BudgetExceededError",
    "ConfigError",
    "Evaluation",
    "Method",
    "PromptConfig",
    "PromptTuningError",
    "Registry",
    "SearchSpace",
]
