"""The specification reference, generated from ``sweep/spec/sections.py`` at build time.

Every section of a sweep specification is a dataclass there, and every field's
``#:`` comment is its documentation (read with Sphinx's own ``ModuleAnalyzer``,
as autodoc reads it). The ``{spec-reference}`` directive renders them, section
by section, with each key's default, so the page cannot drift from the code;
``spec_fields`` is what ``tests/test_docs.py`` checks for fields without one.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Iterator
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.pycode import ModuleAnalyzer
from sphinx.util.docutils import SphinxDirective

MODULE = "sweep.spec.sections"


def _section_class(hint: Any) -> type | None:
    """The dataclass of ``sweep.spec.sections`` a field's type names (``X``, ``X | None``,
    ``tuple[X, ...]``), or None for a plain key."""
    for arg in (hint, *typing.get_args(hint)):
        if dataclasses.is_dataclass(arg) and arg.__module__ == MODULE:
            return arg
    return None


def spec_sections() -> list[tuple[str, type]]:
    """(the TOML table, its dataclass) for the top level ("") and every section of ``SweepSpec``,
    in the order of its fields."""
    from sweep.spec import SweepSpec

    hints = typing.get_type_hints(SweepSpec)
    found = [("", SweepSpec)]
    for f in dataclasses.fields(SweepSpec):
        cls = _section_class(hints[f.name])
        if cls is not None:
            found.append((f"{f.name}.<name>" if f.name == "methods" else f.name, cls))
    return found


def spec_fields() -> Iterator[tuple[str, type, dataclasses.Field, str]]:
    """(table, dataclass, field, its documentation: "" when it has none) for every key of the
    specification; the top level's sections are left out (they have their own tables)."""
    docs = ModuleAnalyzer.for_module(MODULE).find_attr_docs()
    for table, cls in spec_sections():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if cls.__name__ == "SweepSpec" and _section_class(hints[f.name]) is not None:
                continue
            text = " ".join(line.strip() for line in docs.get((cls.__name__, f.name), []))
            yield table, cls, f, text.strip()


#: A code span of a comment: ``double`` or `single` backticks.
_CODE = re.compile(r"(``.+?``|`[^`]+`)")


def _markdown(text: str) -> str:
    """A comment as Markdown: its code spans as they are, a ``<`` outside them escaped (or
    ``results/<name>/`` would read as an HTML tag)."""
    return "".join(part if _CODE.fullmatch(part) else part.replace("<", "\\<")
                   for part in _CODE.split(text))


def _toml(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}" if not value else repr(value)
    return repr(value)


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return f"`{_toml(f.default)}`"
    if f.default_factory is not dataclasses.MISSING:
        return f"`{_toml(f.default_factory())}`"
    return "required"


def reference_markdown() -> list[str]:
    """The reference as Markdown lines: per table its docstring, then one item per key."""
    lines: list[str] = []
    current = None
    for table, cls, f, text in spec_fields():
        if table != current:
            current = table
            title = "The top level" if not table else f"`[{table}]`"
            summary = (cls.__doc__ or "").strip().split("\n\n")[0]
            lines += ["", f"### {title}", "", _markdown(" ".join(summary.split())), ""]
        lines.append(f"- **`{f.name}`** (default {_default(f)}): {_markdown(text)}")
    return lines


class SpecReference(SphinxDirective):
    """``{spec-reference}``: every table and key of a sweep specification, from the code."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        self.env.note_dependency(ModuleAnalyzer.for_module(MODULE).srcname)
        container = nodes.section() if False else nodes.container()
        self.state.nested_parse(StringList(reference_markdown()), self.content_offset, container,
                                match_titles=True)
        return container.children


def setup(app) -> dict[str, Any]:
    app.add_directive("spec-reference", SpecReference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
