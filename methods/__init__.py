"""The mathematics of black-box prompt tuning: pure numpy/torch, no Ray, no open_clip."""

from methods.errors import BudgetExceededError, ConfigError, PromptTuningError

__all__ = ["BudgetExceededError", "ConfigError", "PromptTuningError"]
