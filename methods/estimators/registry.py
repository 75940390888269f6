"""The estimator registry: name -> class, filled explicitly from one list; exact lookup."""

from __future__ import annotations

from methods.errors import ConfigError
from methods.estimators.base import EstimatorConfig, GradientEstimator
from methods.estimators.one_sided import GaussianSmoothing, OrthogonalGaussian, SphereRGE
from methods.estimators.prior_guided import PriorGuidedRGF
from methods.estimators.spsa import SPSA, SPSAGC
from methods.estimators.two_sided import Antithetic, CoordinateBlock

__all__ = ["ESTIMATORS", "estimator_class", "make_estimator"]


def _by_name(*classes: type[GradientEstimator]) -> dict[str, type[GradientEstimator]]:
    """{cls.name: cls}, refusing a name given twice."""
    table: dict[str, type[GradientEstimator]] = {}
    for cls in classes:
        if cls.name in table:
            raise ConfigError(f"estimator name {cls.name!r} is already registered")
        table[cls.name] = cls
    return table


#: name -> estimator class: the one list of estimator names.
ESTIMATORS: dict[str, type[GradientEstimator]] = _by_name(
    GaussianSmoothing,
    SphereRGE,
    OrthogonalGaussian,
    Antithetic,
    SPSA,
    SPSAGC,
    CoordinateBlock,
    PriorGuidedRGF,
)


def estimator_class(name: str) -> type[GradientEstimator]:
    """The estimator class called ``name``; a miss lists the valid names."""
    try:
        return ESTIMATORS[name]
    except KeyError:
        raise ConfigError(
            f"unknown estimator {name!r}; valid names: {', '.join(sorted(ESTIMATORS))}"
        ) from None


def make_estimator(name: str, config: EstimatorConfig, dim: int) -> GradientEstimator:
    """The estimator called ``name``; a miss lists the valid names."""
    return estimator_class(name)(config, dim)
