"""The error hierarchy shared by methods/ and sweep/.

Each error is also a builtin (ValueError, RuntimeError) so that callers who do
not know this package still catch it with the usual clause.
"""

from __future__ import annotations

__all__ = ["PromptTuningError", "ConfigError", "BudgetExceededError"]


class PromptTuningError(Exception):
    """Base class of every error promptsweep raises on purpose."""


class ConfigError(PromptTuningError, ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


class BudgetExceededError(PromptTuningError, RuntimeError):
    """A query would take the oracle past its budget; nothing was computed."""
