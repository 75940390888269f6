"""Zeroth-order gradient estimators: plug-ins of the zeroth-order method, chosen by name.

``ESTIMATORS`` maps each name to its class (``methods.estimators.registry``);
the interface and the conventions every estimator keeps are in
``methods.estimators.base``, the estimators in one module per family:
``one_sided`` (gaussian, sphere, orthogonal), ``two_sided`` (antithetic,
coordinate), ``spsa`` (spsa, spsa_gc) and ``prior_guided`` (prgf).
"""

from methods.estimators.base import EstimatorConfig, GradientEstimator
from methods.estimators.one_sided import GaussianSmoothing, OrthogonalGaussian, SphereRGE
from methods.estimators.prior_guided import PriorGuidedRGF, prgf_lambda
from methods.estimators.registry import ESTIMATORS, estimator_class, make_estimator
from methods.estimators.spsa import SPSA, SPSAGC
from methods.estimators.two_sided import Antithetic, CoordinateBlock

__all__ = [
    "ESTIMATORS",
    "SPSA",
    "SPSAGC",
    "Antithetic",
    "CoordinateBlock",
    "EstimatorConfig",
    "GaussianSmoothing",
    "GradientEstimator",
    "OrthogonalGaussian",
    "PriorGuidedRGF",
    "SphereRGE",
    "estimator_class",
    "make_estimator",
    "prgf_lambda",
]
