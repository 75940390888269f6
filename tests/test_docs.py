"""The documentation site: it builds with warnings as errors, its specification reference is
generated from every documented field, and the results page's snippets run."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

pytest.importorskip("sphinx", reason="the docs need Sphinx (the test extra installs it)")
pytest.importorskip("myst_parser", reason="the docs need MyST (the test extra installs it)")

import spec_reference  # docs/_ext, after the check that Sphinx is here


@pytest.mark.slow
def test_the_site_builds_with_warnings_as_errors(tmp_path):
    build = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")],
        capture_output=True, text=True, check=False, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert build.returncode == 0 and not build.stderr.strip(), build.stderr[-6000:]
    page = (tmp_path / "html" / "specification.html").read_text(encoding="utf-8")
    assert 'id="tracking"' in page and "wandb_mode" in page  # the generated reference


def test_every_field_of_the_specification_has_documentation():
    fields = [(table, f.name, text) for table, _, f, text in spec_reference.spec_fields()]
    undocumented = [f"[{table}] {name}" for table, name, text in fields if not text]
    assert undocumented == [], ("fields of the specification without a #: comment in "
                                f"sweep/spec/sections.py: {undocumented}")
    # every section of SweepSpec is found, each with its keys
    tables = {table for table, _, _ in fields}
    assert tables == {"", "model", "data", "budget", "search", "resources", "methods.<name>",
                      "targets", "tracking"}
    assert ("tracking", "wandb_mode") in {(t, n) for t, n, _ in fields}


def test_the_reference_lists_every_key_with_its_default():
    text = "\n".join(spec_reference.reference_markdown())
    assert "### `[resources]`" in text
    assert '- **`sampler`** (default `"tpe"`):' in text
    assert "- **`trackers`** (default `[]`):" in text
    assert "results/\\<name>/" in text  # a "<" outside code is no HTML tag


def _snippets() -> list[tuple[str, str]]:
    """(the module a snippet reads with, its code) for each Python block of docs/results.md."""
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / "results.md").read_text(), re.DOTALL)
    return [(re.match(r"import (\w+)", code).group(1), code) for code in blocks]


@pytest.mark.parametrize("module, code", _snippets(), ids=[m for m, _ in _snippets()])
def test_the_results_page_snippets_run(module, code, tmp_path, capsys):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (not a dependency): its snippet stays an example")
    from test_report import write_sweep  # a small sweep's results, with a failed trial

    folder = write_sweep(tmp_path / "results")
    # the page's own code, as a reader copies it: the test is that it runs
    exec(compile(code.replace("results/default", str(folder)), "docs/results.md", "exec"), {})  # noqa: S102
    printed = capsys.readouterr().out
    assert "bbt" in printed and "cbbt" in printed
