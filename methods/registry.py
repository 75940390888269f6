"""An explicit, exact, collision-checked registry: method name -> (config class, method class).

Every configuration is a frozen ``kw_only`` dataclass whose fields are the
method's hyperparameters with their published defaults. ``make_config``
builds one from a plain mapping (a TOML table, an Optuna sample) and rejects
unknown keys and wrong types with a message naming the key.

A method is known by name from a ``MethodSpec`` (where its classes live) and
its module is imported only when the method is first made (``entry``,
``make_config``, ``create``): listing the names costs no torch, cma or pypop7.

A registry may extend another (``parent``): it knows the parent's methods and
its own, and adding to it never changes the parent. ``REGISTRY`` holds
promptsweep's own methods; the methods of a user's plugins go to a registry
that extends it (``sweep.spec.SWEEP_METHODS``), so they never appear in
``REGISTRY``.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from methods.base import Method, SearchSpace
from methods.errors import ConfigError

__all__ = ["MethodEntry", "MethodSpec", "Registry", "REGISTRY"]


@dataclass(frozen=True)
class MethodEntry:
    """A method by its classes: what a plugin declares (``METHODS = [MethodEntry(...)]``), and
    what a ``MethodSpec`` becomes once its module is imported."""

    #: the registry name (a sweep's ``[search] methods``, the results' ``method``).
    name: str
    #: a frozen, ``kw_only`` dataclass of ``PromptConfig``: the hyperparameters and defaults.
    config_cls: type
    #: a ``Method``: built as ``method_cls(config, space, seed)``.
    method_cls: type[Method]
    #: one line for listings.
    summary: str = ""
    #: raised whenever a change to the method changes its results (``MethodSpec.version``).
    version: int = 1
    #: sha256 of the source files the method came from, for a plugin's (``sweep.spec``):
    #: rows of two versions of a user's method never mix; None for promptsweep's own.
    digest: str | None = None


@dataclass(frozen=True)
class MethodSpec:
    """A method by name and by where its classes are, before its module is imported."""

    #: the registry name (= the config's ``method`` in a sweep, the Parquet ``method``).
    name: str
    #: the module that defines both classes, e.g. "methods.es_subspace".
    module: str
    #: the config class's name in that module.
    config: str
    #: the method class's name in that module.
    method: str
    #: one line for listings.
    summary: str
    #: raised whenever a change to the method's defaults or code changes its results, so
    #: that rows of the old and the new method stay apart (part of every row's config hash;
    #: ``--resume`` refuses to mix versions).
    version: int = 1

    def load(self) -> MethodEntry:
        """Import the module and look the two classes up."""
        module = importlib.import_module(self.module)
        return MethodEntry(self.name, getattr(module, self.config),
                           getattr(module, self.method), self.summary, self.version)


def _accepts(annotation: Any, value: Any) -> bool:
    """Whether ``value`` fits a simple annotation (int, float, str, bool, X | None, tuple)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(a, value) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is tuple or annotation is tuple:
        return isinstance(value, (tuple, list))
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


class Registry:
    """Name -> MethodEntry. Lookup is exact; a miss lists the valid names.

    Args:
        specs: methods to know by name; each one's module is imported when it is first made.
        parent: a registry whose methods this one knows too (never changed through this one).
    """

    def __init__(self, specs: Iterable[MethodSpec] = (), parent: Registry | None = None) -> None:
        self._entries: dict[str, MethodEntry | MethodSpec] = {}
        self.parent = parent
        for spec in specs:
            self.declare(spec)

    def declare(self, spec: MethodSpec) -> None:
        """Know ``spec.name`` now, import its module when it is first made."""
        self._claim(spec.name)
        self._entries[spec.name] = spec

    def register(self, name: str, config_cls: type, method_cls: type[Method], summary: str = "",
                 version: int = 1) -> None:
        """Know ``name`` by classes already imported."""
        self.add(MethodEntry(name, config_cls, method_cls, summary, version))

    def add(self, entry: MethodEntry) -> None:
        """Know ``entry`` (a method by its classes, a plugin's: ``sweep.spec``)."""
        self._claim(entry.name)
        self._entries[entry.name] = _checked(entry)

    def _claim(self, name: str) -> None:
        if name in self:
            raise ConfigError(f"method name {name!r} is already registered")

    def __contains__(self, name: str) -> bool:
        return name in self._entries or (self.parent is not None and name in self.parent)

    def names(self) -> list[str]:
        """Every method this registry knows, its parent's included."""
        return sorted({*self._entries, *(self.parent.names() if self.parent else ())})

    def own_names(self) -> list[str]:
        """The methods added to this registry, not to its parent."""
        return sorted(self._entries)

    def version(self, name: str) -> int:
        """The method's version (``MethodSpec.version``), without importing its module."""
        if name not in self._entries and self.parent is not None and name in self.parent:
            return self.parent.version(name)
        if name not in self._entries:
            self.entry(name)  # raises, listing the valid names
        return self._entries[name].version

    def digest(self, name: str) -> str | None:
        """The digest of a plugin method's source (``MethodEntry.digest``); None for others."""
        if name not in self._entries and self.parent is not None and name in self.parent:
            return self.parent.digest(name)
        entry = self._entries.get(name)
        return entry.digest if isinstance(entry, MethodEntry) else None

    def entry(self, name: str) -> MethodEntry:
        if name not in self._entries and self.parent is not None and name in self.parent:
            return self.parent.entry(name)
        try:
            entry = self._entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown method {name!r}; valid names: {', '.join(self.names())}"
            ) from None
        if isinstance(entry, MethodSpec):
            entry = self._entries[name] = _checked(entry.load())
        return entry

    def make_config(self, name: str, values: Mapping[str, Any] | None = None) -> Any:
        """The config of ``name`` with ``values`` overriding its defaults, checked key by key."""
        cls = self.entry(name).config_cls
        values = dict(values or {})
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        for key, value in values.items():
            if key not in fields:
                close = difflib.get_close_matches(key, list(fields), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"{name}: unknown hyperparameter {key!r}{hint}")
            if not _accepts(hints[key], value):
                raise ConfigError(
                    f"{name}: hyperparameter {key!r} must be {hints[key]}; got {value!r}"
                )
            if isinstance(value, list):
                values[key] = tuple(value)
        return cls(**values)

    def create(self, name: str, config: Any, space: SearchSpace, seed: int) -> Method:
        """A new method instance. ``config`` is a config object or a mapping of overrides."""
        entry = self.entry(name)
        if not isinstance(config, entry.config_cls):
            config = self.make_config(name, config)
        return entry.method_cls(config, space, seed)


def _checked(entry: MethodEntry) -> MethodEntry:
    if not dataclasses.is_dataclass(entry.config_cls):
        raise ConfigError(
            f"{entry.name}: config class {entry.config_cls.__name__} must be a dataclass")
    return entry


#: The registry of all methods; filled explicitly in methods/__init__.py.
REGISTRY = Registry()
