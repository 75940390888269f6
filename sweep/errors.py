"""Errors of the machinery: data roots, models, and the re-exported base hierarchy."""

from __future__ import annotations

from typing import Any

from methods.errors import BudgetExceededError, ConfigError, PromptTuningError

__all__ = [
    "BudgetExceededError",
    "ConfigError",
    "DataError",
    "ModelError",
    "PromptTuningError",
    "describe",
]


class DataError(PromptTuningError, ValueError):
    """A data root is missing, empty or not in the expected layout."""


class ModelError(PromptTuningError, ValueError):
    """A model name, checkpoint or prompt layout cannot be used."""


def describe(value: Any) -> str:
    """A value as messages quote it, with its kind in TOML's words: ``0 (an integer)``."""
    kinds = {bool: "a boolean", int: "an integer", float: "a float", str: "a string",
             list: "an array", dict: "a table"}
    return f"{value!r} ({kinds.get(type(value), type(value).__name__)})"
