"""Sphinx configuration of promptsweep's documentation site.

Sphinx with MyST rather than MkDocs: the pages that earlier issues wrote in
docs/ are Markdown and stay as they are (MyST reads them, and includes the
README's, results/README.md's and clusters/README.md's sections in place);
the API reference comes from the docstrings through autodoc and napoleon
(Google style), and the specification reference from the field comments
through Sphinx's own reader of them (``_ext/spec_reference.py``); and the
build fails on any warning (``-W``), as Optuna's and Ray's do. Built by
``tests/test_docs.py``, so ``make test`` and CI build it:

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE / "_ext")]  # the repository, then our extension
os.environ.setdefault("HF_HUB_OFFLINE", "1")

project = "promptsweep"
author = "the promptsweep authors"
copyright = "the promptsweep authors"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "google_docstrings",  # sphinx.ext.napoleon, attribute comments left as written
    "spec_reference",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
myst_heading_anchors = 3
# The README's and the cluster files' links point at files of the repository, not pages.
myst_url_schemes = ["http", "https", "mailto"]

# No values of data: tables such as methods.METHODS would fill screens; their docs say what.
autodoc_default_options = {"members": True, "show-inheritance": True, "no-value": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "alabaster"
html_title = "promptsweep"
# Wider than alabaster's 940 px: the README's tables and the cluster files' commands.
html_theme_options = {"page_width": "1200px", "sidebar_width": "230px"}
