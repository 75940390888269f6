"""What a sweep asks for: the TOML specification, read into checked dataclasses, and search spaces.

``load_spec`` reads a file (None: the embedded default) into a ``SweepSpec``
whose sections name the model (``ModelSpec``), the data, the budget, the
search, the resources and the experiment trackers, and whose method sections carry each method's
search space (``MethodSpace``), built and checked once. Everything here is
plain data: the oracle takes the ``ModelSpec``, the driver the rest, and the
report reads the default spaces without loading torch.
"""

from sweep.spec.default import DEFAULT_SPEC_TOML
from sweep.spec.params import DEFAULT_SPACES, Param
from sweep.spec.parser import load_spec, parse_spec
from sweep.spec.plugins import ENTRY_POINT_GROUP, SWEEP_METHODS, Plugin, activate, load_plugin
from sweep.spec.sections import (
    EMBEDDED_MODEL, EMBEDDED_SOURCE, HF_HUB_PREFIX, METRICS, PRECISIONS, SAMPLERS, SCHEDULERS, TRACKERS,
    WANDB_MODES, BudgetSection, DataSection, MethodSection, ModelSpec, ResourcesSection, SearchSection,
    SweepSpec, TargetsSection, TrackingSection,
)
from sweep.spec.spaces import (
    OVERRIDE_KEYS, MethodSpace, field_types, make_space, param_columns, sample_to_config,
)

__all__ = [
    "DEFAULT_SPACES",
    "DEFAULT_SPEC_TOML",
    "EMBEDDED_MODEL",
    "EMBEDDED_SOURCE",
    "ENTRY_POINT_GROUP",
    "HF_HUB_PREFIX",
    "METRICS",
    "OVERRIDE_KEYS",
    "PRECISIONS",
    "SAMPLERS",
    "SCHEDULERS",
    "SWEEP_METHODS",
    "TRACKERS",
    "WANDB_MODES",
    "BudgetSection",
    "DataSection",
    "MethodSection",
    "MethodSpace",
    "ModelSpec",
    "Param",
    "Plugin",
    "ResourcesSection",
    "SearchSection",
    "SweepSpec",
    "TargetsSection",
    "TrackingSection",
    "activate",
    "field_types",
    "load_plugin",
    "load_spec",
    "make_space",
    "param_columns",
    "parse_spec",
    "sample_to_config",
]
