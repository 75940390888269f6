"""Hyperparameter search spaces: one computation-free define-by-run function per method.

A space is a callable ``space(trial) -> dict`` in the form Ray Tune's
``OptunaSearch(space=...)`` takes (Ray's ``optuna_define_by_run_example.py``):
it calls ``trial.suggest_*`` for the hyperparameters it samples and returns
the fixed ones as constants, so the trial's config is the full set of
hyperparameters the sweep sets for that method. Optuna calls it for every
trial, so it only draws numbers: every check (ranges, choices, the method's
config validation) runs once, in ``make_space``.

Spaces are conditional. A parameter may depend on another one, sampled or
not: the visual subspace dimension exists only when the method has a visual
prompt (``n_visual > 0``), SPSA's radius decay only for the SPSA estimators.

Optuna names are the config field names (``sigma0``, ``q``), so one study
per method is assumed; ``prefix`` gives ``<prefix><name>`` instead, for
several methods in one study.

The default ranges (``DEFAULT_SPACES``) are centred on each paper's published
value (``reference/METHODS.md``); a sweep specification can replace a range
or the choices of any config field, add a field, or fix it
(``[methods.<name>.space]`` and ``[methods.<name>] params``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sweep.errors import ConfigError, describe
from sweep.spec.params import DEFAULT_SPACES, Param
from sweep.spec.plugins import PLUGIN_SPACES, SWEEP_METHODS

if TYPE_CHECKING:
    import optuna

__all__ = [
    "OVERRIDE_KEYS",
    "MethodSpace",
    "field_types",
    "make_space",
    "param_columns",
    "sample_to_config",
]

#: Keys of a search-space override table: a numeric range, a set of choices, one value, or
#: ``default = true`` (fixed at the method's default, which TOML may not spell: None).
OVERRIDE_KEYS = ("low", "high", "log", "step", "choices", "value", "default")

# ---------------------------------------------------------------- field types


def _tag(annotation: Any) -> str | None:
    """The column type of a config field: float, int, str or bool; None if not a scalar."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        tags = {_tag(a) for a in typing.get_args(annotation) if a is not type(None)}
        return tags.pop() if len(tags) == 1 else None
    return {bool: "bool", int: "int", float: "float", str: "str"}.get(annotation)


def field_types(method: str) -> dict[str, str | None]:
    """Every config field of ``method`` with its type tag (None: not a scalar, cannot be swept).

    Raises:
        ConfigError: ``method`` is not registered.
    """
    cls = SWEEP_METHODS.entry(method).config_cls
    hints = typing.get_type_hints(cls)
    return {f.name: _tag(hints[f.name]) for f in dataclasses.fields(cls)}


def _defaults(method: str) -> dict[str, Any]:
    return dataclasses.asdict(SWEEP_METHODS.make_config(method, {}))


def _coerce(value: Any, tag: str | None, key: str) -> Any:
    """``value`` as a field of type ``tag`` (an integer for a float field becomes a float)."""
    ok = {
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "str": isinstance(value, str),
    }.get(tag or "", False)
    if not ok:
        expected = {"bool": "a boolean", "int": "an integer", "float": "a number",
                    "str": "a string"}.get(tag or "", "a scalar")
        raise ConfigError(f"{key}: expected {expected}; got {describe(value)}")
    if tag == "float":
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number; got {value!r}")
    return value


def _unknown(what: str, name: str, valid: list[str], key: str, of: str = "") -> ConfigError:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid: {', '.join(sorted(valid))}"
    return ConfigError(f"{key}: unknown {what} {name!r}{of}{hint}")


def _check_config(method: str, values: Mapping[str, Any], key: str) -> None:
    """Build the config of ``values`` so that its own validation speaks, under ``key``."""
    try:
        SWEEP_METHODS.make_config(method, values)
    except ConfigError as exc:
        raise ConfigError(f"{key}: {exc}") from None


# ---------------------------------------------------------------- the space


@dataclass(frozen=True)
class MethodSpace:
    """The define-by-run search space of one method: call it with an Optuna trial.

    ``space(trial)`` samples ``params`` in order (skipping those whose condition
    fails) and returns ``fixed``, both under ``prefix``; Ray Tune merges the two
    into the trial's config. ``hyperparameters(config)`` recovers the method's
    hyperparameters from such a config.

    Example:
        >>> import optuna
        >>> space = make_space("cbbt", {"q": {"choices": [8]}}, {"lr": 0.01})
        >>> study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        >>> trial = study.ask()
        >>> fixed = space(trial)
        >>> trial.params["q"], fixed
        (8, {'lr': 0.01})
    """

    #: the registered method this space is for.
    method: str
    #: the parameters that may be sampled, in sampling order.
    params: tuple[Param, ...]
    #: hyperparameters fixed for every trial (from params and ``value`` overrides).
    fixed: dict[str, Any]
    #: prefix of every Optuna name and config key ("" for one study per method).
    prefix: str = ""
    #: config defaults updated by ``fixed``: what conditions see before sampling.
    base: dict[str, Any] = field(default_factory=dict, repr=False)

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        values = dict(self.base)
        for param in self.params:
            if param.when is not None:
                depends, predicate = param.when
                if not predicate(values.get(depends)):
                    continue
            values[param.name] = param.suggest(trial, self.prefix)
        return {self.prefix + k: v for k, v in self.fixed.items()}

    @property
    def names(self) -> tuple[str, ...]:
        """Every hyperparameter a trial may set: the sampled ones, then the fixed ones."""
        return tuple(p.name for p in self.params) + tuple(self.fixed)

    @property
    def samples_nothing(self) -> bool:
        """True when every trial of this space has the same settings."""
        return not self.params

    def hyperparameters(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """This method's hyperparameters in a trial's ``config`` (other keys are ignored)."""
        out = {}
        for name in self.names:
            if self.prefix + name in config:
                out[name] = config[self.prefix + name]
        return out


def _override(name: str, current: Param | None, table: Any, key: str,
              tag: str | None) -> Param | tuple[str, Any]:
    """A parameter replaced by an override table, or ("value", v) when the table fixes it."""
    if not isinstance(table, Mapping):
        raise ConfigError(
            f"{key}: expected a table of {', '.join(OVERRIDE_KEYS)}; got {describe(table)}")
    for k in table:
        if k not in OVERRIDE_KEYS:
            raise _unknown("key", k, list(OVERRIDE_KEYS), f"{key}.{k}")
    if not table:
        raise ConfigError(f"{key}: an override needs low/high, choices or value")
    if "value" in table:
        if len(table) > 1:
            raise ConfigError(f"{key}: value fixes the parameter; give no other key with it")
        return ("value", _coerce(table["value"], tag, f"{key}.value"))
    if "choices" in table:
        extra = sorted(set(table) - {"choices"})
        if extra:
            raise ConfigError(f"{key}.{extra[0]}: choices replace the range; give no {extra[0]}")
        choices = table["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(
                f"{key}.choices: expected a non-empty array; got {describe(choices)}")
        coerced = tuple(_coerce(c, tag, f"{key}.choices") for c in choices)
        if len(set(coerced)) != len(coerced):
            raise ConfigError(f"{key}.choices: values repeat: {choices!r}")
        when = current.when if current is not None else None
        return Param(name=name, kind="categorical", choices=coerced, when=when)
    # A numeric range, completed from the current range when that is one.
    if tag not in ("int", "float"):
        kind = {"str": "string", "bool": "boolean"}.get(tag or "", "non-scalar")
        raise ConfigError(f"{key}: a {kind} parameter takes choices or value, not a range")
    numeric = current if current is not None and current.kind != "categorical" else None
    bounds = {}
    for end in ("low", "high"):
        if end in table:
            bounds[end] = _coerce(table[end], tag, f"{key}.{end}")
        elif numeric is not None:
            bounds[end] = numeric.low if end == "low" else numeric.high
        else:
            raise ConfigError(f"{key}.{end}: required (this parameter has no default range)")
    log = table.get("log", numeric.log if numeric else False)
    if not isinstance(log, bool):
        raise ConfigError(f"{key}.log: expected a boolean; got {describe(log)}")
    step = table.get("step", numeric.step if numeric and "log" not in table else None)
    if step is not None:
        step = _coerce(step, tag, f"{key}.step")
        if not step > 0:
            raise ConfigError(f"{key}.step: must be > 0; got {step!r}")
    low, high = bounds["low"], bounds["high"]
    if not low <= high:
        raise ConfigError(f"{key}.low: must be <= high ({high!r}); got {low!r}")
    if log and not low > 0:
        raise ConfigError(f"{key}.low: a log range needs low > 0; got {low!r}")
    if log and step is not None and not (tag == "int" and step == 1):
        raise ConfigError(f"{key}.step: Optuna samples a log range without a step; got {step!r}")
    if step is not None and tag == "int" and (high - low) % step:
        origin = "" if "step" in table else " (the default range's step)"
        raise ConfigError(
            f"{key}.step: high - low = {high - low} is not a multiple of {step}{origin}")
    when = current.when if current is not None else None
    return Param(name=name, kind=tag, low=low, high=high, log=log, step=step, when=when)


def make_space(method: str, overrides: Mapping[str, Any] | None = None,
               fixed: Mapping[str, Any] | None = None, *, where: str | None = None,
               prefix: str = "") -> MethodSpace:
    """The search space of ``method``: its default space, with ``fixed`` and ``overrides`` applied.

    Every check happens here, once: unknown fields, types, ranges, and the
    method config's own validation at every end of every range and every
    choice (combined with ``fixed``), so that sampled values are valid configs.

    Args:
        method: A registered method name.
        overrides: Field name -> override table: ``{low, high, log, step}`` (a range; missing
            keys come from the default range), ``{choices = [...]}``, ``{value = v}`` (fix), or
            ``{default = true}`` (fix at the method's default, None included).
        fixed: Field name -> value, fixed for every trial (removed from the space).
        where: Dotted key of the method's section, for messages (default ``methods.<method>``).
        prefix: Prefix of the Optuna names and config keys.

    Returns:
        The space, a picklable callable for ``OptunaSearch(space=...)``.

    Raises:
        ConfigError: a message naming the dotted key (``<where>.params.<field>`` or
            ``<where>.space.<field>.<key>``) and the problem.
    """
    where = where or f"methods.{method}"
    if method not in SWEEP_METHODS:
        raise _unknown("method", method, SWEEP_METHODS.names(), where)
    tags = field_types(method)
    fixed_values: dict[str, Any] = {}
    for name, value in (fixed or {}).items():
        key = f"{where}.params.{name}"
        if name not in tags:
            raise _unknown("hyperparameter", name, list(tags), key, f" of {method}")
        fixed_values[name] = _coerce(value, tags[name], key)
        _check_config(method, {name: fixed_values[name]}, key)
    _check_config(method, fixed_values, f"{where}.params")

    default = DEFAULT_SPACES.get(method) or PLUGIN_SPACES.get(method, ())
    params = {p.name: p for p in default if p.name not in fixed_values}
    for name, table in (overrides or {}).items():
        key = f"{where}.space.{name}"
        if name not in tags:
            raise _unknown("hyperparameter", name, list(tags), key, f" of {method}")
        if name in fixed_values:
            raise ConfigError(f"{key}: {name} is fixed by {where}.params; give one of the two")
        if tags[name] is None:
            raise ConfigError(f"{key}: {name} is not a scalar and cannot be searched")
        if isinstance(table, Mapping) and "default" in table:
            if dict(table) != {"default": True}:
                raise ConfigError(f"{key}: default = true fixes the parameter at {method}'s "
                                  "default; give no other key with it")
            params.pop(name, None)
            fixed_values[name] = _defaults(method)[name]
            continue
        result = _override(name, params.get(name), table, key, tags[name])
        if isinstance(result, Param):
            params[name] = result
        else:
            params.pop(name, None)
            fixed_values[name] = result[1]
            _check_config(method, fixed_values, f"{key}.value")

    base = {**_defaults(method), **fixed_values}
    kept = []
    for param in params.values():
        key = f"{where}.space.{param.name}"
        if param.when is not None:
            depends, predicate = param.when
            # A condition on a value no trial samples is decided now, once.
            if depends not in params and not predicate(base.get(depends)):
                if param.name in (overrides or {}):
                    raise ConfigError(
                        f"{key}: never sampled, since {method} has {depends} = "
                        f"{base.get(depends)!r}")
                continue
        for value in param.extremes():
            end = "choices" if param.kind == "categorical" else _end(param, value)
            _check_config(method, {**fixed_values, param.name: value}, f"{key}.{end}")
        kept.append(param)
    return MethodSpace(method, tuple(kept), fixed_values, prefix, base)


def _end(param: Param, value: Any) -> str:
    return "low" if value == param.low else "high"


def sample_to_config(method: str, sampled: Mapping[str, Any],
                     fixed: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The hyperparameters of one trial: ``fixed`` and ``sampled`` merged, checked by the config.

    Args:
        method: A registered method name.
        sampled: What the space drew (plain field names).
        fixed: The space's fixed hyperparameters; a key in both must have the same value.

    Returns:
        A plain dict (JSON-able, for the results' ``config_json``); ``SWEEP_METHODS.make_config(method,
        result)`` builds the config from it.

    Raises:
        ConfigError: the two disagree, or the config rejects the merged values.
    """
    merged = dict(fixed or {})
    for name, value in sampled.items():
        if name in merged and merged[name] != value:
            raise ConfigError(
                f"{method}: {name} is fixed at {merged[name]!r} but was sampled as {value!r}")
        merged[name] = value
    SWEEP_METHODS.make_config(method, merged)
    return merged


def param_columns(spaces: Iterable[MethodSpace]) -> dict[str, str]:
    """Each hyperparameter the ``spaces`` sample or fix -> "float", "int", "str", "bool".

    Names are config field names, shared across methods (one ``param_<name>``
    column each); an int field and a float field of the same name give "float".

    Raises:
        ConfigError: two methods use one name for fields of incompatible types.
    """
    columns: dict[str, str] = {}
    for space in spaces:
        method = space.method
        tags = field_types(method)
        for name in space.names:
            tag = tags[name] or "str"
            seen = columns.get(name)
            if seen is None or seen == tag:
                columns[name] = tag
            elif {seen, tag} == {"int", "float"}:
                columns[name] = "float"
            else:
                raise ConfigError(
                    f"hyperparameter {name!r} is {seen} in one method and {tag} in {method}")
    return columns
