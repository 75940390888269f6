"""Stand-ins for tests and benchmarks (as ``optuna.testing``): nothing in production imports them."""

from sweep.testing.objectives import QuadraticObjective, SyntheticClipObjective

__all__ = ["QuadraticObjective", "SyntheticClipObjective"]
