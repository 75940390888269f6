"""House rule: methods/ is pure mathematics and never imports ray, open_clip or sweep."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import methods


def _fresh(code: str) -> str:
    """stdout of ``code`` run in a fresh interpreter (nothing imported yet)."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_methods_imports_no_machinery():
    # What importing every module of methods/, subpackages included, pulls in.
    modules = sorted(m.name for m in pkgutil.walk_packages(methods.__path__, "methods."))
    assert "methods.estimators.base" in modules  # the walk reaches into subpackages
    bad = _fresh(
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "top = {n.split('.')[0] for n in sys.modules}\n"
        "print(','.join(sorted(top & {'ray', 'open_clip', 'sweep'})))\n"
    )
    assert bad == "", f"methods/ imported: {bad}"


def test_registry_imports_a_method_only_when_it_is_made():
    # Listing the methods costs no method module: torch, cma and pypop7 wait for entry().
    loaded = "print(sorted({'torch', 'cma', 'pypop7', 'methods.zo_adapter'} & set(sys.modules)))\n"
    out = _fresh(
        "import sys\n"
        "import methods.errors, methods\n"
        "names = methods.REGISTRY.names()\n"
        "assert 'cbbt-adapter' in methods.REGISTRY and 'bpt-vlm' in names, names\n"
        + loaded
        + "methods.REGISTRY.entry('cbbt-adapter')\n"
        + loaded
    )
    assert out.splitlines() == ["[]", "['methods.zo_adapter', 'torch']"], out
