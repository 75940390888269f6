"""Napoleon for the Google-style docstrings, but not for attribute comments.

Napoleon reads an attribute's docstring as ``type: text`` when its first line
has a colon; the project's ``#:`` field comments are plain text ("None: the
sweep's name"), so its listener is swapped for one that leaves attributes as
they are written.
"""

from __future__ import annotations

from typing import Any

from sphinx.ext import napoleon

#: autodoc's kinds whose docstrings are comments, not Google sections.
_COMMENTS = ("attribute", "data", "property")


def _process(app, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    if what not in _COMMENTS:
        napoleon._process_docstring(app, what, name, obj, options, lines)


def setup(app) -> dict[str, Any]:
    app.setup_extension("sphinx.ext.napoleon")
    for listener in list(app.events.listeners["autodoc-process-docstring"]):
        if listener.handler is napoleon._process_docstring:
            app.disconnect(listener.id)
    app.connect("autodoc-process-docstring", _process)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
