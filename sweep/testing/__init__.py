"""Stand-ins for tests and benchmarks (as ``optuna.testing``), and the method kit (``kit``): the
contract's checks a user runs on a method of their own. Nothing in production imports them."""

from sweep.testing import kit
from sweep.testing.objectives import QuadraticObjective, SyntheticClipObjective

__all__ = ["QuadraticObjective", "SyntheticClipObjective", "kit"]
