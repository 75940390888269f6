"""Errors of the machinery: data roots, models, Ray's version; the re-exported base hierarchy."""

from __future__ import annotations

from typing import Any

from methods.errors import BudgetExceededError, ConfigError, PromptTuningError

__all__ = [
    "TESTED_RAY",
    "BudgetExceededError",
    "ConfigError",
    "DataError",
    "ModelError",
    "PromptTuningError",
    "RayVersionError",
    "describe",
]

#: The Ray versions the test suite runs, as pyproject.toml requires them (a test keeps the two
#: equal): promptsweep uses a few private parts of Ray, which move between minor versions.
TESTED_RAY = ">=2.52,<2.61"


class DataError(PromptTuningError, ValueError):
    """A data root is missing, empty or not in the expected layout."""


class ModelError(PromptTuningError, ValueError):
    """A model name, checkpoint or prompt layout cannot be used."""


class RayVersionError(PromptTuningError, RuntimeError):
    """A private part of Ray that promptsweep uses is not there: this Ray is not one the suite
    runs (``TESTED_RAY``)."""

    @classmethod
    def moved(cls, what: str) -> RayVersionError:
        import ray

        return cls(f"{what} is not in Ray {ray.__version__} as promptsweep uses it; promptsweep "
                   f"is tested with ray{TESTED_RAY}: install a Ray of that range")


def describe(value: Any) -> str:
    """A value as messages quote it, with its kind in TOML's words: ``0 (an integer)``."""
    kinds = {bool: "a boolean", int: "an integer", float: "a float", str: "a string",
             list: "an array", dict: "a table"}
    return f"{value!r} ({kinds.get(type(value), type(value).__name__)})"
