"""The layout of sweep/: stages import only stages below them, through their faces, with no circles.

Bottom to top (docs/development.md, "Layout"): the shared modules, then data, spec,
oracle, run, results, tracking (the experiment trackers, fed by the driver), then
tuning, report and testing side by side, then the commands. Imports are read from
the source (every ``import`` statement, also inside functions), so a lazy import
counts like any other; imports under ``if TYPE_CHECKING:`` never run and are left
out of the circle check.
That methods/ never imports sweep/, Ray or open_clip is tests/test_layering.py's.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Each stage of sweep/ and its rank: a stage may import only stages of a lower rank.
RANKS = {
    # shared by every stage (the keeper and the checkpoint store must import nothing heavy:
    # sweep/keeper.py says why; the store raises the shared errors)
    "errors": 0, "keeper": 0, "checkpoints": 1, "budget": 1,
    "data": 2,
    "spec": 3,
    "oracle": 4,
    "run": 5,
    "results": 6,
    "tracking": 7,
    "tuning": 8, "report": 8, "testing": 8,
    # the commands
    "launch": 9, "compare": 9, "estimator_check": 9, "pretrain_tiny": 9,
}
#: Subpackages: other stages import them through their face only (sweep.<stage>).
SUBPACKAGES = {p.name for p in (ROOT / "sweep").iterdir() if (p / "__init__.py").is_file()}
MAX_LINES = 500


def _modules(package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``package`` (a folder under ROOT)."""
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, typing_only: bool = False) -> Iterator[tuple[str, list[str], bool, int]]:
    """(module, imported names, under TYPE_CHECKING, line) for every import in ``tree``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.body:
                yield from _imports(ast.Module(body=[child], type_ignores=[]), True)
            for child in node.orelse:
                yield from _imports(ast.Module(body=[child], type_ignores=[]), typing_only)
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], typing_only, node.lineno
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"relative import at line {node.lineno}"
            yield node.module or "", [a.name for a in node.names], typing_only, node.lineno
        else:
            yield from _imports(node, typing_only)


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "sweep" and len(parts) > 1 else None


SWEEP = _modules("sweep")
METHODS = _modules("methods")


def test_every_stage_has_a_rank():
    stages = {_stage(m) for m in SWEEP} - {None, "__main__"}
    assert stages <= set(RANKS), f"stages without a rank in this test: {stages - set(RANKS)}"


@pytest.mark.parametrize("module", sorted(SWEEP))
def test_imports_point_down_through_faces(module):
    here = _stage(module)
    problems = []
    for target, _, _, line in _imports(ast.parse(SWEEP[module].read_text())):
        there = _stage(target)
        if there is None or there == here:
            continue
        if here is not None and RANKS[there] >= RANKS[here]:
            problems.append(f"line {line}: {module} ({here}, rank {RANKS[here]}) imports "
                            f"{target} ({there}, rank {RANKS[there]})")
        if there in SUBPACKAGES and target != f"sweep.{there}":
            problems.append(f"line {line}: {module} imports {target}, behind the face of "
                            f"sweep.{there}")
    assert not problems, "\n".join(problems)


def _graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of the project it imports when it runs (TYPE_CHECKING left out)."""
    known = set(SWEEP) | set(METHODS)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for target, names, typing_only, _ in _imports(ast.parse(path.read_text())):
            if typing_only:
                continue
            if target in known and target != module:
                graph[module].add(target)
            for name in names:  # from package import submodule
                if f"{target}.{name}" in known:
                    graph[module].add(f"{target}.{name}")
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle():
    assert _cycles(_graph({**SWEEP, **METHODS})) == []


def test_the_circle_check_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_over_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in [*SWEEP.values(), *METHODS.values()]
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def _heavy_imports(module: str, heavy: set[str]) -> str:
    """What of ``heavy`` importing ``module`` pulls in, in a fresh interpreter."""
    code = (f"import sys, {module}\n"
            f"heavy = {sorted(heavy)!r}\n"
            "print(','.join(sorted({n.split('.')[0] for n in sys.modules} & set(heavy))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT)
    return out.stdout.strip()


@pytest.mark.parametrize("module", ["sweep.report", "sweep.results", "sweep.errors",
                                    "sweep.tracking"])
def test_light_leaves_load_neither_torch_nor_ray(module):
    loaded = _heavy_imports(module, {"torch", "ray", "open_clip", "optuna"})
    assert loaded == "", f"import {module} loaded {loaded}"


@pytest.mark.parametrize("module", ["sweep.tuning.trial", "sweep.oracle.pool"])
def test_a_trial_process_loads_no_model(module):
    # A trial only sends requests to the pool: torch and open_clip (500 MB and more of
    # memory per process) are the actors' and the driver's, and CBBT's adapter's.
    loaded = _heavy_imports(module, {"torch", "open_clip"})
    assert loaded == "", f"import {module} loaded {loaded}"
