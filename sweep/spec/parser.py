"""Reading a sweep specification: a TOML file into the sections' dataclasses, every value checked.

A specification says which model, data sets, shots and seeds, which
methods, what budget (in which query unit) with how many checkpoints, how
the hyperparameters are searched (samples per method, sampler, scheduler,
per-method fixed values and search-space overrides) and with what resources
(concurrent trials, oracle actors, GPUs), and which experiment trackers get
each seed's run. ``sweeps/default.toml`` is the
embedded default (``sweep.spec.default`` holds a byte-identical copy, so that
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
from pathlib import Path
from typing import Any, NoReturn

from sweep.data import DATASETS, SHOTS
from sweep.errors import ConfigError, describe
from sweep.spec.default import DEFAULT_SPEC_TOML
from sweep.spec.plugins import SWEEP_METHODS, Plugin, entry_point_plugin, load_plugin
from sweep.spec.sections import (
    EMBEDDED_MODEL, EMBEDDED_SOURCE, HF_HUB_PREFIX, METRICS, PRECISIONS, SAMPLERS, SCHEDULERS,
    BudgetSection, DataSection, MethodSection, ModelSpec, ResourcesSection, SearchSection,
    SweepSpec,
)
from sweep.spec.budgets import PUBLISHED, REQUIRED, BudgetParsing
from sweep.spec.targets import parse_targets
from sweep.spec.trackers import parse_tracking
from sweep.spec.spaces import make_space

try:
    import tomllib as _toml
except ModuleNotFoundError:  # Python 3.10
    try:
        import tomli as _toml  # type: ignore[no-redef]
    except ModuleNotFoundError:
        _toml = None  # type: ignore[assignment]

__all__ = ["load_spec", "parse_spec"]

#: A sweep name is one path component under results/.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: Seeds feed pycma and numpy, which take [0, 2**32).
_SEED_LIMIT = 2**32


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

_REQUIRED = REQUIRED


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


class _Parser(BudgetParsing):
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
            self.fail(key, f"expected a table; got {describe(value)}")
        self.known(value, key, valid)
        return value

    def any_table(self, data: Mapping[str, Any], prefix: str, name: str) -> dict[str, Any]:
        """The sub-table ``name`` of ``data`` ({} when absent), its keys not checked here."""
        value = data.get(name, {})
        if not isinstance(value, dict):
            self.fail(_join(prefix, name), f"expected a table; got {describe(value)}")
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
            self.fail(key, f"expected an integer; got {describe(value)}")
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
            self.fail(key, f"expected a number; got {describe(value)}")
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
            self.fail(key, f"expected a string; got {describe(value)}")
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
            self.fail(key, f"expected an array; got {describe(value)}")
        if not value:
            self.fail(key, "must not be empty")
        for i, item in enumerate(value):
            if item in value[:i]:
                self.fail(key, f"{item!r} is listed twice")
        return value

    def path(self, value: Any, key: str) -> Path:
        if not isinstance(value, str) or not value:
            self.fail(key, f"expected a non-empty path string; got {describe(value)}")
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
        plugins = self.plugins(data)
        search = self.search(data)
        if data.get("budget") == PUBLISHED:  # budget = "published": the whole sweep's
            budget = BudgetSection(published=True, limit=0)
        else:
            keys = _toml_keys(BudgetSection, "published", "levels")
            budget = self.budget(self.table(data, "", "budget", keys), "budget", BudgetSection(),
                                 full=True)
        if not budget.published and search.scheduler == "asha" and \
                budget.limit * search.grace_fraction < 1:
            self.fail("search.grace_fraction", f"{search.grace_fraction} of a budget of "
                      f"{budget.limit} is less than one query")
        methods = self.methods(data, search, budget)
        data_section = self.data(data)
        for section in methods:
            if section.budget is None and budget.published:
                self.published_ok(section.name, "budget")
        return SweepSpec(
            name=name,
            description=description,
            plugins=plugins,
            source=self.source,
            model=self.model(data),
            data=data_section,
            budget=budget,
            search=search,
            resources=self.resources(data),
            methods=methods,
            targets=parse_targets(self, data, search, data_section),
            tracking=parse_tracking(self, data),
        )

    def plugins(self, data: Mapping[str, Any]) -> tuple[Plugin, ...]:
        """The modules and files ``plugins`` names, and the installed packages' entry points
        of the methods ``search.methods`` names that no other method has (``sweep.spec.plugins``),
        their methods checked and known from here on."""
        found: list[Plugin] = []
        if "plugins" in data:
            for item in self.array(data, "", "plugins"):
                if not isinstance(item, str) or not item:
                    self.fail("plugins", f"expected module names or .py files; got {describe(item)}")
                try:
                    found.append(load_plugin(item, self.base))
                except ConfigError as exc:
                    self.fail("plugins", str(exc))
        search = data.get("search")
        named = search.get("methods") if isinstance(search, Mapping) else None
        for name in named if isinstance(named, list) else ():
            if isinstance(name, str) and name not in SWEEP_METHODS:
                try:
                    plugin = entry_point_plugin(name)
                except ConfigError as exc:
                    self.fail("search.methods", str(exc))
                if plugin is not None:
                    found.append(plugin)
        return tuple(found)

    def model(self, data: Mapping[str, Any]) -> ModelSpec:
        table = self.table(data, "", "model", _toml_keys(ModelSpec, "config"))
        name = self.str_(table, "model", "name", EMBEDDED_MODEL)
        pretrained = self.str_(table, "model", "pretrained", "") or None
        checkpoint = self.value(table, "model", "checkpoint", None)
        precision = (self.str_(table, "model", "precision", choices=PRECISIONS, what="precision")
                     if "precision" in table else None)
        embedded = name == EMBEDDED_MODEL
        hub = name.startswith(HF_HUB_PREFIX)
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
        return ModelSpec(name=name, pretrained=pretrained, checkpoint=checkpoint,
                         precision=precision)

    def data(self, data: Mapping[str, Any]) -> DataSection:
        table = self.table(data, "", "data", _toml_keys(DataSection))
        defaults = DataSection()
        datasets = self.array(table, "data", "datasets", defaults.datasets)
        for item in datasets:
            if not isinstance(item, str):
                self.fail("data.datasets", f"expected data set names; got {describe(item)}")
            self.choice(item, "data.datasets", list(DATASETS), "data set")
        needs_root = [d for d in datasets if DATASETS[d].needs_root]
        root: Path | None = None
        if "root" in table:
            root = self.path(table["root"], "data.root")
        elif needs_root:
            self.fail("data.root", f"required: {needs_root[0]} is read from a data root")
        if root is not None and needs_root and self.check_paths:
            if not root.is_dir():
                self.fail("data.root", f"{root} does not exist or is not a directory")
            for name in needs_root:
                folder = root / str(DATASETS[name].folder)
                if not folder.is_dir():
                    self.fail("data.root", f"{name} needs the folder {folder}, which does not "
                                           "exist")
        shots = self.shots(table, "data", defaults.shots)
        seeds = self.array(table, "data", "seeds", defaults.seeds)
        for item in seeds:
            self.check_int(item, "data.seeds", low=0, high=_SEED_LIMIT - 1)
        cache = None
        if "cache" in table:  # "~" stays: each node expands it to its own home
            raw = self.str_(table, "data", "cache")
            cache = raw if raw.startswith("~") else str(self.path(raw, "data.cache"))
        return DataSection(datasets=tuple(datasets), root=None if root is None else str(root),
                           shots=tuple(shots), seeds=tuple(seeds), cache=cache)

    def shots(self, table: Mapping[str, Any], prefix: str, default: Any) -> list[int]:
        shots = self.array(table, prefix, "shots", default)
        for item in shots:
            self.check_int(item, f"{prefix}.shots")
            if item not in SHOTS:
                self.fail(f"{prefix}.shots", f"{item} is not one of {', '.join(map(str, SHOTS))}")
        return shots

    def search(self, data: Mapping[str, Any]) -> SearchSection:
        table = self.table(data, "", "search", _toml_keys(SearchSection))
        d = SearchSection()
        methods = self.array(table, "search", "methods")
        for item in methods:
            if not isinstance(item, str):
                self.fail("search.methods", f"expected method names; got {describe(item)}")
            self.choice(item, "search.methods", SWEEP_METHODS.names(), "method")
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
        actors = self.int_(table, "resources", "actors", d.actors, low=1)
        return ResourcesSection(
            concurrency=self.int_(table, "resources", "concurrency", d.concurrency, low=1),
            actors=actors,
            gpus_per_actor=(self.float_(table, "resources", "gpus_per_actor", low=0.0)
                            if "gpus_per_actor" in table else None),
            cpus_per_actor=self.float_(table, "resources", "cpus_per_actor", d.cpus_per_actor,
                                       low=0.0),
            cache_gb=(self.float_(table, "resources", "cache_gb", above=0.0)
                      if "cache_gb" in table else None),
            actors_per_task=(self.int_(table, "resources", "actors_per_task", low=1, high=actors)
                             if "actors_per_task" in table else None),
            merge_wait_ms=self.float_(table, "resources", "merge_wait_ms", d.merge_wait_ms,
                                      low=0.0),
            placement_timeout_s=self.float_(table, "resources", "placement_timeout_s",
                                            d.placement_timeout_s, above=0.0),
            trial_restarts=self.int_(table, "resources", "trial_restarts", d.trial_restarts, low=0),
        )

    def methods(self, data: Mapping[str, Any], search: SearchSection,
                budget: BudgetSection) -> tuple[MethodSection, ...]:
        tables = data.get("methods", {})
        if not isinstance(tables, dict):
            self.fail("methods", f"expected a table of method sections; got {describe(tables)}")
        for name in tables:
            if name not in search.methods:
                if name not in SWEEP_METHODS:
                    self.choice(name, f"methods.{name}", SWEEP_METHODS.names(), "method")
                self.fail(f"methods.{name}", f"{name} is not in search.methods; add it there or "
                                             "remove this section")
        return tuple(self.method(name, tables.get(name, {}), search, budget)
                     for name in search.methods)

    def method(self, name: str, table: Any, search: SearchSection,
               budget: BudgetSection) -> MethodSection:
        prefix = f"methods.{name}"
        if not isinstance(table, dict):
            self.fail(prefix, f"expected a table; got {describe(table)}")
        self.known(table, prefix, _toml_keys(MethodSection, "name"))
        # Their keys are checked by make_space, against the method's config fields.
        params = self.any_table(table, prefix, "params")
        space = self.any_table(table, prefix, "space")
        samples = self.int_(table, prefix, "samples", None, low=1) if "samples" in table else None
        shots = tuple(self.shots(table, prefix, None)) if "shots" in table else None
        method_budget = None
        if table.get("budget") == PUBLISHED:
            method_budget = BudgetSection(published=True, limit=0, checkpoints=budget.checkpoints)
        elif "budget" in table:
            own = self.table(table, prefix, "budget", ["unit", "limit", "batch_size", "fraction"])
            method_budget = self.budget(own, f"{prefix}.budget", budget, full=False)
        if method_budget is not None and method_budget.published:
            self.published_ok(name, f"{prefix}.budget")
        try:
            search_space = make_space(name, space, params, where=prefix)
        except ConfigError as exc:
            raise ConfigError(f"{self.source}: {exc}") from None
        return MethodSection(name=name, params=dict(params), space=search_space,
                             samples=samples, budget=method_budget, shots=shots)
