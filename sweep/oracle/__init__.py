"""The black box: a CLIP with injected prompts that scores candidate prompts, locally or in Ray actors.

``load_model`` builds a ``ModelSpec``'s CLIP (``sweep.spec``); ``PromptedCLIP``
injects text context and visual prompt tokens (the text tower computes the
prefix shared by all class prompts once, ``shared_prefix``); ``ClipOracle``
holds one model, one few-shot task and one ``PromptLayout`` and answers
batched, budgeted queries. ``OraclePool`` starts Ray actors that each hold a
model (``OracleServer``) and hands each trial a ``PooledOracle`` with
``ClipOracle``'s interface and its own budget.
"""

from sweep.oracle.clip_oracle import ClipOracle, check_subset, count_candidates
from sweep.oracle.images import DeviceCache, ImageStore, default_cache_bytes
from sweep.oracle.models import (
    DTYPES,
    EMBEDDED_CONFIG,
    EMBEDDED_WEIGHTS,
    LoadedModel,
    load_model,
    pick_device,
    register_embedded,
    resolve_precision,
    split_transform,
)
from sweep.oracle.pool import OraclePool, OracleServer, PooledOracle, PoolError, TaskKey
from sweep.oracle.prompted import PromptedCLIP, PromptLayout

__all__ = [
    "DTYPES",
    "EMBEDDED_CONFIG",
    "EMBEDDED_WEIGHTS",
    "ClipOracle",
    "DeviceCache",
    "ImageStore",
    "LoadedModel",
    "OraclePool",
    "OracleServer",
    "PoolError",
    "PooledOracle",
    "PromptLayout",
    "PromptedCLIP",
    "TaskKey",
    "check_subset",
    "count_candidates",
    "default_cache_bytes",
    "load_model",
    "pick_device",
    "register_embedded",
    "resolve_precision",
    "split_transform",
]
