"""House rule: methods/ is pure mathematics and never imports ray, open_clip or sweep."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import methods


def test_methods_imports_no_machinery():
    # A fresh interpreter: what importing every module of methods/ pulls in.
    modules = sorted(p.stem for p in Path(methods.__file__).parent.glob("*.py") if p.stem != "__init__")
    code = (
        "import importlib, sys\n"
        "import methods\n"
        f"for m in {modules!r}: importlib.import_module('methods.' + m)\n"
        "bad = sorted({n.split('.')[0] for n in sys.modules} & {'ray', 'open_clip', 'sweep'})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"methods/ imported: {out.stdout.strip()}"
