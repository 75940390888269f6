"""Errors of the machinery: data roots, models, and the re-exported base hierarchy."""

from __future__ import annotations

from methods.errors import BudgetExceededError, ConfigError, PromptTuningError

__all__ = [
    "BudgetExceededError",
    "ConfigError",
    "DataError",
    "ModelError",
    "PromptTuningError",
]


class DataError(PromptTuningError, ValueError):
    """A data root is missing, empty or not in the expected layout."""


class ModelError(PromptTuningError, ValueError):
    """A model name, checkpoint or prompt layout cannot be used."""
