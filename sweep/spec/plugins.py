"""Methods from outside promptsweep: a user's file or module, or an installed package.

A plugin is a Python module that declares its methods in a list named
``METHODS``, each a ``methods.MethodEntry`` (or a ``methods.MethodSpec``), and
may give their default search spaces in ``SPACES`` (method name -> a list of
``sweep.spec.Param``; without one, only the specification's ``space`` is searched)::

    # my_zo.py
    METHODS = [MethodEntry("my-zo", MyZOConfig, MyZO, "my zeroth-order method", version=1)]
    SPACES = {"my-zo": [Param(name="lr", kind="float", low=1e-3, high=1e-1, log=True)]}

A sweep finds plugins two ways. Its specification names modules or files
(``plugins = ["my_zo.py", "mylab.methods"]``: a specification is the user's
own code, so naming a module there is trusted, unlike a received results
folder). And a method of ``[search] methods`` that no module named declares
is looked up in the installed packages' entry points of the group
``promptsweep.methods``, by its name (``my-zo = "mylab.zo"``: a module with
``METHODS``).

Their methods go to ``SWEEP_METHODS``, a registry that extends
``methods.REGISTRY`` and never changes it: listings of promptsweep's own
methods (docs/methods.md, the conformance kit's ``methods.REGISTRY.names()``) do
not see them. Everything is checked as the specification is read, before
any work: the module imports, declares ``METHODS``, each method's config is a
frozen dataclass of ``PromptConfig`` that builds with its defaults and its
class is a ``Method``, and no name is taken by another method. Each
failure is one line.

The sweep's processes on other nodes import a plugin by its module name:
the driver ships each plugin's file or package folder to every node through
Ray's runtime environment (``py_modules``: ``Plugin.path``), and a trial
imports it before it makes its method (``activate``). A digest of each
plugin's source files goes into every row of its methods, so that ``--resume``
never mixes two versions of a user's method.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.metadata
import importlib.util
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from methods import REGISTRY, Method, MethodEntry, MethodSpec, PromptConfig, Registry
from sweep.errors import ConfigError

__all__ = ["ENTRY_POINT_GROUP", "PLUGIN_SPACES", "SWEEP_METHODS", "Plugin", "activate",
           "entry_point_plugin", "load_plugin"]

#: The entry-point group of installed packages' methods.
ENTRY_POINT_GROUP = "promptsweep.methods"
#: The methods a sweep can run: promptsweep's own (``methods.REGISTRY``) and those of the
#: plugins this process loaded.
SWEEP_METHODS = Registry(parent=REGISTRY)
#: Plugin methods' default search spaces (a plugin's optional ``SPACES``: method name -> a
#: sequence of ``sweep.spec.Param``), as ``DEFAULT_SPACES`` holds promptsweep's own.
PLUGIN_SPACES: dict[str, tuple] = {}
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class Plugin:
    """A module that declares methods, as a sweep found it."""

    #: how the sweep named it: a file or module of ``plugins``, or "entry point NAME".
    source: str
    #: the name every process imports it by.
    module: str
    #: what Ray ships to every node (``py_modules``): its file, or its package's folder.
    path: str
    #: the methods it declares.
    methods: tuple[str, ...]
    #: sha256 of its source files.
    digest: str


def _digest(path: Path) -> str:
    """sha256 over a module's source files: the file, or every .py file of a package folder."""
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
    h = hashlib.sha256()
    for file in files:
        h.update(str(file.relative_to(path if path.is_dir() else path.parent)).encode())
        h.update(b"\0" + file.read_bytes() + b"\0")
    return h.hexdigest()


def _shipped(module: Any) -> Path:
    """The file or package folder of ``module``: what its import name needs on another node."""
    file = Path(getattr(module, "__file__", "") or "")
    if not file.is_file():
        raise ConfigError(f"module {module.__name__} has no source file to ship to the nodes")
    return file.parent if file.name == "__init__.py" else file


def _import_file(path: Path) -> Any:
    """Import the file ``path`` as the module named by its stem (as another node will)."""
    name = path.stem
    if not name.isidentifier():
        raise ConfigError(f"{path}: a plugin file's name must be a Python module name")
    loaded = sys.modules.get(name)
    if loaded is not None:
        if Path(getattr(loaded, "__file__", "") or "").resolve() == path.resolve():
            return loaded
        raise ConfigError(f"{path}: a module named {name!r} is imported already from "
                          f"{getattr(loaded, '__file__', None) or 'elsewhere'}; rename the file")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _entries(module: Any, declared: Any) -> list[MethodEntry]:
    """The MethodEntries of ``declared`` (a module's ``METHODS``, or one entry)."""
    items = declared if isinstance(declared, (list, tuple)) else [declared]
    out = []
    for item in items:
        if isinstance(item, MethodSpec):
            item = item.load()
        if not isinstance(item, MethodEntry):
            raise ConfigError(f"{module.__name__}.METHODS holds {item!r}, not a "
                              "methods.MethodEntry or methods.MethodSpec")
        out.append(item)
    return out


def _check(entry: MethodEntry, where: str) -> None:
    """The method contract, checked once, before any work."""
    if not isinstance(entry.name, str) or not _NAME.match(entry.name):
        raise ConfigError(f"{where}: method name {entry.name!r} must be lower-case letters, "
                          "digits, '.', '_' or '-'")
    if not (isinstance(entry.version, int) and entry.version >= 1):
        raise ConfigError(f"{where}: {entry.name}'s version must be an integer >= 1; got "
                          f"{entry.version!r}")
    config = entry.config_cls
    if not (isinstance(config, type) and issubclass(config, PromptConfig)
            and dataclasses.is_dataclass(config) and config.__dataclass_params__.frozen):
        raise ConfigError(f"{where}: {entry.name}'s config {config!r} is not a frozen dataclass "
                          "of methods.PromptConfig")
    if not (isinstance(entry.method_cls, type) and issubclass(entry.method_cls, Method)):
        raise ConfigError(f"{where}: {entry.name}'s method class {entry.method_cls!r} is not a "
                          "methods.Method")
    try:
        config()
    except Exception as exc:  # noqa: BLE001 - the user's code: say what it raised
        raise ConfigError(f"{where}: {entry.name}'s config does not build with its defaults: "
                          f"{type(exc).__name__}: {exc}") from exc


def _register(module: Any, declared: Any, source: str) -> Plugin:
    """Check and add the methods ``module`` declares; the plugin as a sweep ships it."""
    path = _shipped(module)
    digest = _digest(path)
    entries = [dataclasses.replace(e, digest=digest) for e in _entries(module, declared)]
    if not entries:
        raise ConfigError(f"{source}: its METHODS is empty")
    for entry in entries:
        _check(entry, source)
        if entry.name in SWEEP_METHODS:
            if SWEEP_METHODS.digest(entry.name) == digest:
                continue  # this very plugin, loaded before in this process
            owner = "promptsweep" if entry.name in REGISTRY else "another plugin"
            raise ConfigError(f"{source}: method name {entry.name!r} is taken by {owner}; "
                              "rename the method")
        SWEEP_METHODS.add(entry)
    for name, params in dict(getattr(module, "SPACES", {})).items():
        if name not in {e.name for e in entries}:
            raise ConfigError(f"{source}: SPACES names {name!r}, which it does not declare")
        PLUGIN_SPACES[name] = tuple(params)
    return Plugin(source, module.__name__, str(path), tuple(e.name for e in entries), digest)


def _failed_import(source: str, exc: BaseException) -> ConfigError:
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return ConfigError(f"{source} does not import: {type(exc).__name__}: {reason}")


def load_plugin(ref: str, base: Path) -> Plugin:
    """The plugin ``ref``: a file (``*.py``, relative to ``base``) or an importable module.

    Raises:
        ConfigError: it does not import, declares no ``METHODS``, a method breaks the
            contract, or a name is taken.
    """
    file = ref.endswith(".py")
    try:
        if file:
            path = (base / Path(ref).expanduser()).resolve()
            if not path.is_file():
                raise ConfigError(f"plugin file {path} does not exist")
            module = _import_file(path)
        else:
            module = importlib.import_module(ref)
    except ConfigError:
        raise
    except BaseException as exc:  # noqa: BLE001 - the user's module: one line, whatever it is
        raise _failed_import(f"plugin {ref!r}", exc) from exc
    if not hasattr(module, "METHODS"):
        raise ConfigError(f"plugin {ref!r} declares no METHODS (a list of methods.MethodEntry)")
    return _register(module, module.METHODS, f"plugin {ref!r}")


def entry_point_plugin(name: str) -> Plugin | None:
    """The installed package's plugin that declares method ``name`` (entry points of the group
    ``promptsweep.methods``, by name), or None."""
    for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=name):
        source = f"entry point {name!r} ({point.value})"
        try:
            loaded = point.load()
        except BaseException as exc:  # noqa: BLE001 - the user's package: one line
            raise _failed_import(source, exc) from exc
        module = sys.modules[point.module]
        if not hasattr(module, "METHODS"):
            raise ConfigError(f"{source}: module {point.module} declares no METHODS")
        del loaded  # the module is what other processes import: its METHODS count
        plugin = _register(module, module.METHODS, source)
        if name not in plugin.methods:
            raise ConfigError(f"{source} declares {', '.join(plugin.methods)}, not {name!r}")
        return plugin
    return None


def activate(modules: Iterable[str]) -> None:
    """In a sweep's other processes: import each plugin module (shipped by Ray's runtime
    environment) and add its methods, once per process."""
    for name in modules:
        module = importlib.import_module(name)
        _register(module, module.METHODS, f"plugin {name!r}")
