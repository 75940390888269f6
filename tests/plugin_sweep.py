"""A sweep of two methods from outside promptsweep, on a Ray of its own.

Run by ``tests/test_plugins.py`` in a process of its own, from a temporary folder:

    python tests/plugin_sweep.py WORK_DIR

The sweep of docs/own-method.md at a smoke test's size: the example's specification, which
names its file plugin (``examples/random_search``), with one more method, from a package
"installed" in WORK_DIR/site: its dist-info declares the entry point, and the folder is put
on this process's ``sys.path`` only, not in the environment the Ray workers inherit. So the
trials can import the two modules only through the runtime environment the launcher gives
the Ray job (``py_modules``). Prints one JSON line: the
results folder, where a worker imports the two modules from, and whether their
own folders are on a worker's path.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PACKAGE = """\
from dataclasses import dataclass

from methods import MethodEntry
from methods.bbt import BBT, BBTConfig


@dataclass(frozen=True, kw_only=True)
class InstalledConfig(BBTConfig):
    popsize: int = 6
    intrinsic_dim_text: int | None = 20


METHODS = [MethodEntry("installed-bbt", InstalledConfig, BBT, "BBT, from an installed package")]
"""

EXAMPLE = ROOT / "examples" / "random_search"


def _install(site: Path) -> None:
    """The package ``installed_methods`` and its dist-info, as pip would leave them."""
    (site / "installed_methods").mkdir(parents=True)
    (site / "installed_methods" / "__init__.py").write_text(PACKAGE)
    info = site / "installed_methods-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: installed-methods\n"
                                   "Version: 0.1\n")
    (info / "entry_points.txt").write_text("[promptsweep.methods]\n"
                                           "installed-bbt = installed_methods\n")


def main(work: str) -> int:
    import ray

    from sweep.launch import main as launch

    work_dir = Path(work)
    site = work_dir / "site"
    _install(site)
    sys.path.insert(0, str(site))  # this process only: the workers do not inherit it
    # docs/own-method.md's sweep, at a smoke test's size, with the installed method beside
    # the example's file plugin (its entry point found by the method's name).
    spec = (EXAMPLE / "sweep.toml").read_text()
    spec = spec.replace('plugins = ["random_search.py"]',
                        f'plugins = ["{EXAMPLE / "random_search.py"}"]')
    spec = spec.replace("methods = [\"random-search\",",
                        "methods = [\"installed-bbt\", \"random-search\",")
    (work_dir / "sweep.toml").write_text(spec)
    if launch([str(work_dir / "sweep.toml"), "--smoke-test", "--results",
               str(work_dir / "results"), "--quiet"]):
        return 1
    places = [_places(ray, name) for name in ("random_search", "installed_methods")]
    originals = [str(EXAMPLE.resolve()), str(site.resolve())]
    print(json.dumps({
        "folder": str(work_dir / "results" / "random-search-smoke"),
        "worker_module_files": [file for file, _ in places],
        "originals_on_worker_path": [o in path for o, (_, path) in zip(originals, places)],
    }))
    ray.shutdown()
    return 0


def _places(ray, name: str) -> tuple[str, list[str]]:
    """Where a worker of the running job imports ``name`` from, and the worker's path."""

    @ray.remote(num_cpus=0)
    def where() -> tuple[str, list[str]]:
        import importlib

        return (importlib.import_module(name).__file__,
                [str(Path(p).resolve()) for p in sys.path if p])

    return ray.get(where.remote())


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
