"""The black box: a CLIP with injected prompts that scores candidate prompts, locally or in Ray actors.

``load_model`` builds a ``ModelSpec``'s CLIP (``sweep.spec``); ``PromptedCLIP``
injects text context and visual prompt tokens (the text tower computes the
prefix shared by all class prompts once, ``shared_prefix``); ``ClipOracle``
holds one model, one few-shot task and one ``PromptLayout`` and answers
batched, budgeted queries. ``OraclePool`` starts Ray actors that each hold a
model (``OracleServer``) and hands each trial a ``PooledOracle`` with
``ClipOracle``'s interface and its own budget.
"""

import importlib
from typing import Any

# Each name's module, imported on first use (PEP 562): a trial's process takes the pool's
# client side (``pool``, ``requests``) without loading torch or open_clip.
_MODULES = {
    "ClipOracle": "clip_oracle",
    **dict.fromkeys(("DeviceCache", "ImageStore", "default_cache_bytes"), "images"),
    **dict.fromkeys(("DTYPES", "LoadedModel", "load_model", "pick_device", "register_embedded",
                     "resolve_precision", "split_transform"), "models"),
    **dict.fromkeys(("OraclePool", "PlacementError", "PooledOracle", "PoolError"), "pool"),
    **dict.fromkeys(("ActorSetupError", "OracleServer", "ServerBase"), "server"),
    "PromptedCLIP": "prompted",
    **dict.fromkeys(("DASSL_VIEW_COLUMNS", "EMBEDDED_CONFIG", "EMBEDDED_WEIGHTS", "VIEW_COLUMNS",
                     "PromptLayout", "TaskKey",
                     "check_subset", "check_views", "count_candidates"), "requests"),
}


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "DASSL_VIEW_COLUMNS",
    "DTYPES",
    "EMBEDDED_CONFIG",
    "EMBEDDED_WEIGHTS",
    "VIEW_COLUMNS",
    "ActorSetupError",
    "ClipOracle",
    "DeviceCache",
    "ImageStore",
    "LoadedModel",
    "OraclePool",
    "OracleServer",
    "PlacementError",
    "PoolError",
    "PooledOracle",
    "PromptLayout",
    "PromptedCLIP",
    "ServerBase",
    "TaskKey",
    "check_subset",
    "check_views",
    "count_candidates",
    "default_cache_bytes",
    "load_model",
    "pick_device",
    "register_embedded",
    "resolve_precision",
    "split_transform",
]
