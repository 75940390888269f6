"""Sweep specifications: a TOML file read into frozen dataclasses, every value checked up front.

A specification says which model, data sets, shots and seeds, which
methods, what budget (in which query unit) with how many checkpoints, how
the hyperparameters are searched (samples per method, sampler, scheduler,
per-method fixed values and search-space overrides) and with what resources
(concurrent trials, oracle actors, GPUs). ``sweeps/default.toml`` is the
embedded default (``DEFAULT_SPEC_TOML`` is a byte-identical copy, so that
``python -m sweep.launch`` needs no file); ``sweeps/coop16.toml`` is a
commented GPU-cluster example.

Every problem (malformed TOML, an unknown key, a wrong type, a value out of
range, an unknown name, a missing path) raises ``ConfigError`` before any
work, with one line naming the file, the dotted key and the problem, e.g.::

    sweeps/x.toml: methods.bpt-vlm.space.sigma0.low: a log range needs low > 0; got 0.0

Relative paths (``data.root``, ``model.checkpoint``) are relative to the
specification's folder (the working directory for the embedded default) and
are stored absolute, since Ray workers run in other directories.

TOML needs Python 3.11 (``tomllib``); on 3.10 the ``tomli`` package is used
if it is installed.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from methods import REGISTRY
from sweep.budget import UNITS, BudgetSpec
from sweep.data import SHOTS
from sweep.errors import ConfigError
from sweep.image_folders import COOP_DATASETS
from sweep.models import EMBEDDED_MODEL, ModelSpec
from sweep.spaces import MethodSpace, make_space

try:
    import tomllib as _toml
except ModuleNotFoundError:  # Python 3.10
    try:
        import tomli as _toml  # type: ignore[no-redef]
    except ModuleNotFoundError:
        _toml = None  # type: ignore[assignment]

__all__ = [
    "DATASETS",
    "DEFAULT_SPEC_TOML",
    "EMBEDDED_SOURCE",
    "METRICS",
    "SAMPLERS",
    "SCHEDULERS",
    "BudgetSection",
    "DataSection",
    "MethodSection",
    "ModelSection",
    "ResourcesSection",
    "SearchSection",
    "SweepSpec",
    "load_spec",
    "parse_spec",
]

#: What error messages call the embedded default.
EMBEDDED_SOURCE = "<embedded default>"
#: Data set names: the embedded digits, a plain class-per-folder root, and CoOp's 11.
DATASETS = ("digits", "folder", *sorted(COOP_DATASETS))
#: Optuna samplers: TPE (the default) or random search (a baseline for TPE).
SAMPLERS = ("tpe", "random")
#: Trial schedulers: none (every trial runs to the budget) or ASHA on the query count.
SCHEDULERS = ("none", "asha")
#: Selection metrics, validation only (test accuracy is reported, never optimised) -> mode.
METRICS = {"val_acc": "max", "val_loss": "min"}

#: A sweep name is one path component under results/.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: Seeds feed pycma and numpy, which take [0, 2**32).
_SEED_LIMIT = 2**32

# The embedded default, byte-identical to sweeps/default.toml (tests/test_spec.py checks it).
DEFAULT_SPEC_TOML = """\
# The embedded default sweep: what `python -m sweep.launch` runs with no arguments.
#
# A small but complete sweep that runs on any laptop, CPU only: the tiny CLIP
# and the digits data set that ship with the package, three methods, two
# seeds, and a budget that keeps the whole sweep to a few minutes on 2 cores.
# sweep/spec.py holds a byte-identical copy (DEFAULT_SPEC_TOML); a test keeps
# the two equal. sweeps/coop16.toml documents every key.

# Results go to results/<name>/.
name = "default"
description = "embedded default: tiny CLIP on digits; BPT-VLM, CBBT and BBT on CPU"

[model]
# The embedded tiny CLIP: its weights ship with the package, so no tag or checkpoint.
name = "promptsweep-tiny"

[data]
datasets = ["digits"]
shots = [16]
seeds = [1, 2]

[budget]
# One candidate evaluation is one prompt scored in one request: the whole
# 16-shot training set for BPT-VLM and BBT, a 32-image mini-batch for CBBT.
unit = "candidate_evals"
limit = 1000
checkpoints = 8

[search]
methods = ["bpt-vlm", "cbbt", "bbt"]
samples = 2
seed = 0
sampler = "tpe"
scheduler = "none"
metric = "val_acc"

[resources]
concurrency = 2
actors = 1
gpus_per_actor = 0

# CBBT's published q = 256 costs 257 evaluations a step: fewer than 4 steps in 1,000.
[methods.cbbt]
params = { q = 16 }

# The tiny model's prompts hold 8 x 64 = 512 text and 5 x 64 = 320 visual
# numbers: subspaces of 500 or 1,000 would not be smaller than the prompt.
[methods.bpt-vlm.space]
intrinsic_dim_text = { choices = [50, 100, 250] }
intrinsic_dim_visual = { choices = [50, 100, 250] }

[methods.bbt.space]
intrinsic_dim_text = { choices = [50, 100, 250] }
"""


# ---------------------------------------------------------------- sections


@dataclass(frozen=True, kw_only=True)
class ModelSection:
    """``[model]``: the embedded CLIP, or an open_clip name with a tag or a checkpoint."""

    #: open_clip architecture name (``open_clip.list_models()``, or ``hf-hub:<repo>``),
    #: or the embedded tiny model.
    name: str = EMBEDDED_MODEL
    #: open_clip pretrained tag ("openai", "laion2b_s34b_b79k"; the weights must be cached);
    #: excludes ``checkpoint``.
    pretrained: str | None = None
    #: absolute path of a local state-dict file for the architecture ``name``.
    checkpoint: str | None = None

    def to_model_spec(self) -> ModelSpec:
        """The ``ModelSpec`` that ``sweep.models.load_model`` takes."""
        return ModelSpec(name=self.name, pretrained=self.pretrained, checkpoint=self.checkpoint)


@dataclass(frozen=True, kw_only=True)
class DataSection:
    """``[data]``: the tasks. Every data set x shots x seed is swept."""

    #: data set names (``DATASETS``); all but "digits" are read from ``root``.
    datasets: tuple[str, ...] = ("digits",)
    #: absolute data root: CoOp's layout for CoOp names, class folders for "folder".
    root: str | None = None
    #: shots per class, each in ``sweep.data.SHOTS``.
    shots: tuple[int, ...] = (16,)
    #: seeds of the few-shot draw and of the method, each in [0, 2**32).
    seeds: tuple[int, ...] = (1,)


@dataclass(frozen=True, kw_only=True)
class BudgetSection:
    """``[budget]``: the largest budget; curves are recorded at checkpoints spaced up to it."""

    #: the unit the budget is enforced in (``sweep.budget.UNITS``).
    unit: str = "candidate_evals"
    #: queries allowed in that unit (>= 1); smaller budgets are read off the checkpoints.
    limit: int = 1000
    #: images per call (the mini-batch of the "calls" unit).
    batch_size: int = 128
    #: budget levels at which val and test accuracy are recorded (>= 8, roughly log-spaced).
    checkpoints: int = 8

    def to_budget_spec(self) -> BudgetSpec:
        """The ``BudgetSpec`` the oracle enforces."""
        return BudgetSpec(unit=self.unit, limit=self.limit, batch_size=self.batch_size)


@dataclass(frozen=True, kw_only=True)
class SearchSection:
    """``[search]``: which methods, and how Optuna (through Ray Tune) searches their spaces."""

    #: registered method names (``methods.REGISTRY``), in the order they are swept.
    methods: tuple[str, ...] = ()
    #: hyperparameter settings drawn per method, data set and shots (>= 1).
    samples: int = 1
    #: seed of the Optuna sampler (never time-based), in [0, 2**32).
    seed: int = 0
    #: "tpe" (Optuna's TPESampler) or "random" (RandomSampler).
    sampler: str = "tpe"
    #: "none", or "asha" to stop poor trials early on the query count.
    scheduler: str = "none"
    #: the validation metric that selects settings: "val_acc" (max) or "val_loss" (min).
    metric: str = "val_acc"
    #: ASHA's grace period as a fraction of the budget, in (0, 1].
    grace_fraction: float = 0.125
    #: ASHA's reduction factor (>= 2): the share of trials kept at each rung is 1 / it.
    reduction_factor: int = 3

    @property
    def mode(self) -> str:
        """"max" or "min": the direction of ``metric``."""
        return METRICS[self.metric]


@dataclass(frozen=True, kw_only=True)
class ResourcesSection:
    """``[resources]``: concurrency and the oracle actors that hold the models."""

    #: trials running at once (Ray Tune's max_concurrent_trials), >= 1.
    concurrency: int = 1
    #: oracle actors, each holding one model resident on its device, >= 1.
    actors: int = 1
    #: GPUs per oracle actor (fractions share a GPU), >= 0.
    gpus_per_actor: float = 0.0
    #: CPUs per oracle actor, >= 0; 0 lets trials use every CPU of a small machine
    #: (trials and actors that each hold 1 of 2 CPUs wait for each other forever).
    cpus_per_actor: float = 0.0


@dataclass(frozen=True, kw_only=True)
class MethodSection:
    """``[methods.<name>]``: one method's fixed hyperparameters, space overrides and budget."""

    #: the registered method name (the table's key).
    name: str
    #: hyperparameters fixed for every trial (config field -> value), checked by the config.
    params: dict[str, Any] = field(default_factory=dict)
    #: search-space overrides: field -> {low, high, log, step} | {choices} | {value}.
    space: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: settings drawn for this method, replacing ``search.samples``; None: that one.
    samples: int | None = None
    #: this method's budget, e.g. a published one in its own unit; None: the sweep's.
    budget: BudgetSection | None = None


@dataclass(frozen=True, kw_only=True)
class SweepSpec:
    """A whole sweep, as read from a TOML file (``load_spec``) and fully checked.

    Example:
        >>> spec = load_spec(None)
        >>> spec.name, spec.search.methods, spec.budget.limit
        ('default', ('bpt-vlm', 'cbbt', 'bbt'), 1000)
        >>> spec.budget_for("cbbt").unit, spec.method("cbbt").params
        ('candidate_evals', {'q': 16})
    """

    #: results go to results/<name>/ (one path component: letters, digits, ".", "_", "-").
    name: str
    #: free text for reports.
    description: str = ""
    #: where the specification came from (a path, or EMBEDDED_SOURCE); not a TOML key.
    source: str = EMBEDDED_SOURCE
    #: the CLIP.
    model: ModelSection = field(default_factory=ModelSection)
    #: data sets, data root, shots and seeds.
    data: DataSection = field(default_factory=DataSection)
    #: the sweep's budget and checkpoints.
    budget: BudgetSection = field(default_factory=BudgetSection)
    #: methods, samples, sampler, scheduler and selection metric.
    search: SearchSection = field(default_factory=SearchSection)
    #: concurrency and oracle actors.
    resources: ResourcesSection = field(default_factory=ResourcesSection)
    #: one section per method of ``search.methods``, in the same order.
    methods: tuple[MethodSection, ...] = ()

    def method(self, name: str) -> MethodSection:
        """The section of method ``name``.

        Raises:
            ConfigError: ``name`` is not a method of this sweep.
        """
        for section in self.methods:
            if section.name == name:
                return section
        raise ConfigError(f"{name!r} is not a method of sweep {self.name!r}; "
                          f"its methods: {', '.join(self.search.methods)}")

    def budget_for(self, method: str) -> BudgetSection:
        """The budget trials of ``method`` run to: its own, or the sweep's."""
        return self.method(method).budget or self.budget

    def space(self, method: str, prefix: str = "") -> MethodSpace:
        """The define-by-run search space of ``method`` (``sweep.spaces.make_space``)."""
        section = self.method(method)
        return make_space(method, section.space, section.params, where=f"methods.{method}",
                          prefix=prefix)

    def samples_for(self, method: str) -> int:
        """Settings to draw for ``method``: 1 when its space samples nothing."""
        if self.space(method).samples_nothing:
            return 1
        section = self.method(method)
        return section.samples if section.samples is not None else self.search.samples

    def results_dir(self, root: str | Path = "results") -> Path:
        """Where this sweep writes: ``<root>/<name>``."""
        return Path(root) / self.name

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-able) for provenance and config hashes."""
        return dataclasses.asdict(self)


# ---------------------------------------------------------------- loading


def load_spec(path: str | Path | None = None, *, check_paths: bool = True) -> SweepSpec:
    """Read and check the sweep specification at ``path`` (None: the embedded default).

    Args:
        path: A TOML file, or None for ``DEFAULT_SPEC_TOML``.
        check_paths: Whether the data root and checkpoint must exist here (turn off to
            check a cluster's specification on another machine).

    Raises:
        ConfigError: the file cannot be read, or any problem of ``parse_spec``.
    """
    if path is None:
        return parse_spec(DEFAULT_SPEC_TOML, EMBEDDED_SOURCE, check_paths=check_paths)
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the sweep specification: {exc}") from None
    return parse_spec(text, str(path), base_dir=path.resolve().parent, check_paths=check_paths)


def parse_spec(text: str, source: str = EMBEDDED_SOURCE, *, base_dir: str | Path | None = None,
               check_paths: bool = True) -> SweepSpec:
    """Parse and check a sweep specification given as TOML text.

    Args:
        text: The TOML document.
        source: Its name in messages; a path's stem is the default sweep name.
        base_dir: The folder relative paths are taken from (None: the working directory).
        check_paths: Whether the data root and checkpoint must exist here.

    Returns:
        The specification, every value checked.

    Raises:
        ConfigError: one line ``<source>: <dotted key>: <problem>``.
    """
    if _toml is None:
        raise ConfigError(f"{source}: reading TOML needs Python 3.11+ or the tomli package")
    try:
        data = _toml.loads(text)
    except _toml.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: malformed TOML: {exc}") from None
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    return _Parser(source, base, check_paths).sweep(data)


# ---------------------------------------------------------------- the parser

_REQUIRED = object()


def _describe(value: Any) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a float", str: "a string",
             list: "an array", dict: "a table"}
    return f"{value!r} ({kinds.get(type(value), type(value).__name__)})"


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _toml_keys(cls: type, *skip: str) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.name not in skip]


def _known_models() -> list[str]:
    """open_clip's architecture names, without importing it (and torch) when it is not loaded."""
    if "open_clip" in sys.modules:
        return list(sys.modules["open_clip"].list_models())  # includes added configs
    found = importlib.util.find_spec("open_clip")
    if found is None or not found.submodule_search_locations:
        return []
    folder = Path(next(iter(found.submodule_search_locations))) / "model_configs"
    return sorted(p.stem for p in folder.glob("*.json"))


def _pretrained_tags(name: str) -> list[str]:
    import open_clip  # costs seconds; only reached when a tag is given

    return list(open_clip.list_pretrained_tags_by_model(name))


class _Parser:
    """Reads the TOML data section by section; ``fail`` names the source and the dotted key."""

    def __init__(self, source: str, base: Path, check_paths: bool) -> None:
        self.source = source
        self.base = base
        self.check_paths = check_paths

    # ------------------------------------------------------------ primitives
    def fail(self, key: str, problem: str) -> NoReturn:
        raise ConfigError(f"{self.source}: {key}: {problem}")

    def table(self, data: Mapping[str, Any], prefix: str, name: str,
              valid: Sequence[str]) -> dict[str, Any]:
        """The sub-table ``name`` of ``data`` ({} when absent); its keys must be in ``valid``."""
        key = _join(prefix, name)
        value = data.get(name, {})
        if not isinstance(value, dict):
            self.fail(key, f"expected a table; got {_describe(value)}")
        self.known(value, key, valid)
        return value

    def any_table(self, data: Mapping[str, Any], prefix: str, name: str) -> dict[str, Any]:
        """The sub-table ``name`` of ``data`` ({} when absent), its keys not checked here."""
        value = data.get(name, {})
        if not isinstance(value, dict):
            self.fail(_join(prefix, name), f"expected a table; got {_describe(value)}")
        return value

    def known(self, table: Mapping[str, Any], prefix: str, valid: Sequence[str]) -> None:
        for name in table:
            if name not in valid:
                close = difflib.get_close_matches(name, list(valid), n=1)
                valid_keys = ", ".join(valid)
                hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {valid_keys}"
                self.fail(_join(prefix, name), f"unknown key {name!r}{hint}")

    def value(self, table: Mapping[str, Any], prefix: str, name: str, default: Any) -> Any:
        if name in table:
            return table[name]
        if default is _REQUIRED:
            self.fail(_join(prefix, name), "required")
        return default

    def int_(self, table: Mapping[str, Any], prefix: str, name: str, default: Any = _REQUIRED,
             *, low: int | None = None, high: int | None = None) -> int:
        key = _join(prefix, name)
        value = self.value(table, prefix, name, default)
        return self.check_int(value, key, low=low, high=high)

    def check_int(self, value: Any, key: str, *, low: int | None = None,
                  high: int | None = None) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(key, f"expected an integer; got {_describe(value)}")
        if low is not None and value < low:
            self.fail(key, f"must be >= {low}; got {value}")
        if high is not None and value > high:
            self.fail(key, f"must be <= {high}; got {value}")
        return value

    def float_(self, table: Mapping[str, Any], prefix: str, name: str, default: Any = _REQUIRED,
               *, low: float | None = None, above: float | None = None,
               high: float | None = None) -> float:
        key = _join(prefix, name)
        value = self.value(table, prefix, name, default)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
            self.fail(key, f"expected a number; got {_describe(value)}")
        if low is not None and value < low:
            self.fail(key, f"must be >= {low}; got {value}")
        if above is not None and not value > above:
            self.fail(key, f"must be > {above}; got {value}")
        if high is not None and value > high:
            self.fail(key, f"must be <= {high}; got {value}")
        return float(value)

    def str_(self, table: Mapping[str, Any], prefix: str, name: str, default: Any = _REQUIRED,
             *, choices: Sequence[str] | None = None, what: str = "value") -> str:
        key = _join(prefix, name)
        value = self.value(table, prefix, name, default)
        if not isinstance(value, str):
            self.fail(key, f"expected a string; got {_describe(value)}")
        if choices is not None:
            self.choice(value, key, choices, what)
        return value

    def choice(self, value: str, key: str, choices: Sequence[str], what: str) -> None:
        if value not in choices:
            close = difflib.get_close_matches(value, list(choices), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            # Long lists (open_clip's 140-odd models) would drown the one line.
            valid = ", ".join(choices) if len(choices) <= 20 else f"{len(choices)} names"
            self.fail(key, f"unknown {what} {value!r}; {hint}valid: {valid}")

    def array(self, table: Mapping[str, Any], prefix: str, name: str,
              default: Any = _REQUIRED) -> list[Any]:
        """A non-empty array without repeated values."""
        key = _join(prefix, name)
        value = self.value(table, prefix, name, default)
        if isinstance(value, tuple):  # a default
            value = list(value)
        if not isinstance(value, list):
            self.fail(key, f"expected an array; got {_describe(value)}")
        if not value:
            self.fail(key, "must not be empty")
        for i, item in enumerate(value):
            if item in value[:i]:
                self.fail(key, f"{item!r} is listed twice")
        return value

    def path(self, value: Any, key: str) -> Path:
        if not isinstance(value, str) or not value:
            self.fail(key, f"expected a non-empty path string; got {_describe(value)}")
        path = Path(value).expanduser()
        return (path if path.is_absolute() else self.base / path).resolve()

    # ------------------------------------------------------------ sections
    def sweep(self, data: Mapping[str, Any]) -> SweepSpec:
        self.known(data, "", _toml_keys(SweepSpec, "source"))
        is_path = not (self.source.startswith("<") and self.source.endswith(">"))
        default_name = Path(self.source).stem if is_path else _REQUIRED
        name = self.str_(data, "", "name", default_name)
        if not _NAME.fullmatch(name) or ".." in name:
            self.fail("name", f"{name!r} is not a single folder name under results/ (1-64 "
                              "letters, digits, '.', '_' or '-', starting with a letter or "
                              "digit, no '..')")
        description = self.str_(data, "", "description", "")
        search = self.search(data)
        budget = self.budget(self.table(data, "", "budget", _toml_keys(BudgetSection)),
                             "budget", BudgetSection(), full=True)
        if search.scheduler == "asha" and budget.limit * search.grace_fraction < 1:
            self.fail("search.grace_fraction", f"{search.grace_fraction} of a budget of "
                      f"{budget.limit} is less than one query")
        return SweepSpec(
            name=name,
            description=description,
            source=self.source,
            model=self.model(data),
            data=self.data(data),
            budget=budget,
            search=search,
            resources=self.resources(data),
            methods=self.methods(data, search, budget),
        )

    def model(self, data: Mapping[str, Any]) -> ModelSection:
        table = self.table(data, "", "model", _toml_keys(ModelSection))
        name = self.str_(table, "model", "name", EMBEDDED_MODEL)
        pretrained = self.str_(table, "model", "pretrained", "") or None
        checkpoint = self.value(table, "model", "checkpoint", None)
        embedded = name == EMBEDDED_MODEL
        hub = name.startswith("hf-hub:")
        if not embedded and not hub:
            known = _known_models()
            if known:
                self.choice(name, "model.name", [EMBEDDED_MODEL, *known], "model")
        if pretrained and checkpoint is not None:
            self.fail("model.checkpoint", "give a pretrained tag or a checkpoint, not both")
        if pretrained and (embedded or hub):
            self.fail("model.pretrained", f"{name!r} takes no pretrained tag (its weights come "
                                          "with it); remove the key")
        if pretrained:
            tags = _pretrained_tags(name)
            clean = pretrained.lower().replace("-", "_")
            if clean not in tags:
                valid = ", ".join(tags) or "none"
                self.fail("model.pretrained", f"open_clip has no tag {pretrained!r} for {name}; "
                                              f"valid: {valid}")
        if not (embedded or hub or pretrained or checkpoint is not None):
            self.fail("model.pretrained", f"{name!r} needs a pretrained tag or a checkpoint "
                                          "(random weights make no sweep)")
        if checkpoint is not None:
            path = self.path(checkpoint, "model.checkpoint")
            if self.check_paths and not path.is_file():
                self.fail("model.checkpoint", f"{path} does not exist or is not a file")
            checkpoint = str(path)
        return ModelSection(name=name, pretrained=pretrained, checkpoint=checkpoint)

    def data(self, data: Mapping[str, Any]) -> DataSection:
        table = self.table(data, "", "data", _toml_keys(DataSection))
        defaults = DataSection()
        datasets = self.array(table, "data", "datasets", defaults.datasets)
        for item in datasets:
            if not isinstance(item, str):
                self.fail("data.datasets", f"expected data set names; got {_describe(item)}")
            self.choice(item, "data.datasets", DATASETS, "data set")
        needs_root = [d for d in datasets if d != "digits"]
        root: Path | None = None
        if "root" in table:
            root = self.path(table["root"], "data.root")
        elif needs_root:
            self.fail("data.root", f"required: {needs_root[0]} is read from a data root")
        if root is not None and needs_root and self.check_paths:
            if not root.is_dir():
                self.fail("data.root", f"{root} does not exist or is not a directory")
            for name in needs_root:
                folder = root / ("train" if name == "folder" else COOP_DATASETS[name].folder)
                if not folder.is_dir():
                    self.fail("data.root", f"{name} needs the folder {folder}, which does not "
                                           "exist")
        shots = self.array(table, "data", "shots", defaults.shots)
        for item in shots:
            self.check_int(item, "data.shots")
            if item not in SHOTS:
                self.fail("data.shots", f"{item} is not one of {', '.join(map(str, SHOTS))}")
        seeds = self.array(table, "data", "seeds", defaults.seeds)
        for item in seeds:
            self.check_int(item, "data.seeds", low=0, high=_SEED_LIMIT - 1)
        return DataSection(datasets=tuple(datasets), root=None if root is None else str(root),
                           shots=tuple(shots), seeds=tuple(seeds))

    def budget(self, table: Mapping[str, Any], prefix: str, defaults: BudgetSection,
               *, full: bool) -> BudgetSection:
        """``[budget]`` (``full``: limit required, checkpoints allowed) or a method's budget."""
        unit = self.str_(table, prefix, "unit", defaults.unit, choices=UNITS, what="budget unit")
        limit = self.int_(table, prefix, "limit", _REQUIRED if full else defaults.limit, low=1)
        batch_size = self.int_(table, prefix, "batch_size", defaults.batch_size, low=1)
        checkpoints = self.int_(table, prefix, "checkpoints", defaults.checkpoints, low=8)
        return BudgetSection(unit=unit, limit=limit, batch_size=batch_size,
                             checkpoints=checkpoints)

    def search(self, data: Mapping[str, Any]) -> SearchSection:
        table = self.table(data, "", "search", _toml_keys(SearchSection))
        d = SearchSection()
        methods = self.array(table, "search", "methods")
        for item in methods:
            if not isinstance(item, str):
                self.fail("search.methods", f"expected method names; got {_describe(item)}")
            self.choice(item, "search.methods", REGISTRY.names(), "method")
        return SearchSection(
            methods=tuple(methods),
            samples=self.int_(table, "search", "samples", d.samples, low=1),
            seed=self.int_(table, "search", "seed", d.seed, low=0, high=_SEED_LIMIT - 1),
            sampler=self.str_(table, "search", "sampler", d.sampler, choices=SAMPLERS,
                              what="sampler"),
            scheduler=self.str_(table, "search", "scheduler", d.scheduler, choices=SCHEDULERS,
                                what="scheduler"),
            metric=self.str_(table, "search", "metric", d.metric, choices=tuple(METRICS),
                             what="metric"),
            grace_fraction=self.float_(table, "search", "grace_fraction", d.grace_fraction,
                                       above=0.0, high=1.0),
            reduction_factor=self.int_(table, "search", "reduction_factor", d.reduction_factor,
                                       low=2),
        )

    def resources(self, data: Mapping[str, Any]) -> ResourcesSection:
        table = self.table(data, "", "resources", _toml_keys(ResourcesSection))
        d = ResourcesSection()
        return ResourcesSection(
            concurrency=self.int_(table, "resources", "concurrency", d.concurrency, low=1),
            actors=self.int_(table, "resources", "actors", d.actors, low=1),
            gpus_per_actor=self.float_(table, "resources", "gpus_per_actor", d.gpus_per_actor,
                                       low=0.0),
            cpus_per_actor=self.float_(table, "resources", "cpus_per_actor", d.cpus_per_actor,
                                       low=0.0),
        )

    def methods(self, data: Mapping[str, Any], search: SearchSection,
                budget: BudgetSection) -> tuple[MethodSection, ...]:
        tables = data.get("methods", {})
        if not isinstance(tables, dict):
            self.fail("methods", f"expected a table of method sections; got {_describe(tables)}")
        for name in tables:
            if name not in search.methods:
                if name not in REGISTRY:
                    self.choice(name, f"methods.{name}", REGISTRY.names(), "method")
                self.fail(f"methods.{name}", f"{name} is not in search.methods; add it there or "
                                             "remove this section")
        return tuple(self.method(name, tables.get(name, {}), search, budget)
                     for name in search.methods)

    def method(self, name: str, table: Any, search: SearchSection,
               budget: BudgetSection) -> MethodSection:
        prefix = f"methods.{name}"
        if not isinstance(table, dict):
            self.fail(prefix, f"expected a table; got {_describe(table)}")
        self.known(table, prefix, _toml_keys(MethodSection, "name"))
        # Their keys are checked by make_space, against the method's config fields.
        params = self.any_table(table, prefix, "params")
        space = self.any_table(table, prefix, "space")
        samples = self.int_(table, prefix, "samples", None, low=1) if "samples" in table else None
        method_budget = None
        if "budget" in table:
            own = self.table(table, prefix, "budget", ["unit", "limit", "batch_size"])
            method_budget = self.budget(own, f"{prefix}.budget", budget, full=False)
        try:
            make_space(name, space, params, where=prefix)
        except ConfigError as exc:
            raise ConfigError(f"{self.source}: {exc}") from None
        return MethodSection(name=name, params=dict(params),
                             space={k: dict(v) for k, v in space.items()},
                             samples=samples, budget=method_budget)
