"""Methods from outside promptsweep (``sweep.spec.plugins``): a plugin file and an installed
package's entry point each run in a real sweep whose workers can import them only through
Ray's runtime environment (``tests/plugin_sweep.py``, in a process and a Ray of its own); a
malformed plugin fails before any work with one line; rows carry the plugin's digest, and
``--resume`` never mixes two versions of it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import methods
from sweep.errors import ConfigError
from sweep.spec import SWEEP_METHODS, parse_spec

ROOT = Path(__file__).resolve().parent.parent

SPEC = """\
name = "mine"
plugins = ["{plugin}"]
[budget]
limit = 40
[search]
methods = [{methods}]
"""

GOOD = """\
from dataclasses import dataclass
from methods import MethodEntry
from random_search import RandomSearch, RandomSearchConfig


@dataclass(frozen=True, kw_only=True)
class {cls}Config(RandomSearchConfig):
    popsize: int = 6


METHODS = [MethodEntry("{name}", {cls}Config, RandomSearch, version={version})]
"""


@pytest.fixture(scope="module", autouse=True)
def example():
    from sweep.testing import kit

    kit.load(str(ROOT / "examples" / "random_search" / "random_search.py"))


def _spec(tmp_path: Path, module: str, source: str, names: str):
    (tmp_path / f"{module}.py").write_text(source)
    return parse_spec(SPEC.format(plugin=f"{module}.py", methods=names), "mine.toml",
                      base_dir=tmp_path)


@pytest.mark.parametrize("module, source, names, says", [
    ("clash_plugin", GOOD.format(cls="Clash", name="bbt", version=1), '"bbt"',
     "plugins: plugin 'clash_plugin.py': method name 'bbt' is taken by promptsweep; rename "
     "the method"),
    ("raising_plugin", "import no_such_module_here\n", '"bbt"',
     "plugins: plugin 'raising_plugin.py' does not import: ModuleNotFoundError: No module named "
     "'no_such_module_here'"),
    ("no_methods_plugin", "X = 1\n", '"bbt"',
     "plugins: plugin 'no_methods_plugin.py' declares no METHODS (a list of "
     "methods.MethodEntry)"),
    ("not_a_method_plugin", "from methods import MethodEntry\nfrom random_search import "
     "RandomSearchConfig\nMETHODS = [MethodEntry('not-a-method', RandomSearchConfig, dict)]\n",
     '"bbt"', "plugins: plugin 'not_a_method_plugin.py': not-a-method's method class <class "
     "'dict'> is not a methods.Method"),
])
def test_a_malformed_plugin_fails_before_any_work_with_one_line(tmp_path, module, source, names,
                                                                says):
    with pytest.raises(ConfigError) as info:
        _spec(tmp_path, module, source, names)
    assert "\n" not in str(info.value)
    assert str(info.value) == f"mine.toml: {says}"


def test_a_plugins_methods_stay_out_of_promptsweeps_registry(tmp_path):
    spec = _spec(tmp_path, "own_plugin", GOOD.format(cls="Own", name="own-rs", version=2),
                 '"own-rs", "bbt"')
    assert spec.search.methods == ("own-rs", "bbt")
    assert [p.methods for p in spec.plugins] == [("own-rs",)]
    assert "own-rs" in SWEEP_METHODS and SWEEP_METHODS.version("own-rs") == 2
    assert "own-rs" not in methods.REGISTRY and "own-rs" not in methods.REGISTRY.names()


def test_resume_refuses_rows_of_another_version_of_a_plugins_source(tmp_path):
    from sweep.budget import CheckpointRecord, QueryCounts
    from sweep.results import ResultsWriter, TrialRecord
    from sweep.tuning import plan_sweep

    spec = _spec(tmp_path, "digest_plugin", GOOD.format(cls="Digest", name="digest-rs",
                                                        version=1), '"digest-rs"')
    queries = QueryCounts(candidate_evals=36)
    ResultsWriter(tmp_path / "results", "mine", {"sigma": "float"}).write(TrialRecord(
        trial_id="digest-rs-digits-16shot-000-s1", sweep="mine",
        sample_id="digest-rs-digits-16shot-000", method="digest-rs", method_version=1,
        method_digest="0" * 64, model="m", dataset="digits", shots=16, seed=1, budget=40,
        budget_unit="candidate_evals", params={"sigma": 0.5}, queries=queries,
        checkpoints=[CheckpointRecord(0, queries, 1.0, 0.5, 0.5, 1.0, 0.9)]))
    with pytest.raises(ConfigError, match="holds digest-rs rows of other source files than "
                                          "the plugin's now"):
        plan_sweep(spec, tmp_path / "results", resume=True)


@pytest.mark.ray
@pytest.mark.slow
def test_a_file_plugin_and_an_installed_one_run_in_a_real_sweep(tmp_path):
    script = Path(__file__).with_name("plugin_sweep.py")
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                          text=True, timeout=400, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    # Ray's runtime environment, not the workers' own path, delivered both modules.
    assert report["originals_on_worker_path"] == [False, False]
    assert all("runtime_resources" in path for path in report["worker_module_files"])
    trials = pd.read_parquet(Path(report["folder"]) / "trials").set_index("method")
    assert sorted(trials.index) == ["bbt", "bpt-vlm", "installed-bbt", "random-search"]
    assert (trials["status"] == "completed").all(), trials["error"].tolist()
    plugins = trials.loc[["installed-bbt", "random-search"], "method_digest"]
    assert plugins.str.fullmatch("[0-9a-f]{64}").all() and plugins.nunique() == 2
    assert trials.loc[["bbt", "bpt-vlm"], "method_digest"].isna().all()
    # The page's second command: the tables are data, no plugin is needed to read them.
    from sweep.report.__main__ import main as report_main

    assert report_main([report["folder"]]) == 0
    assert "installed-bbt" in (Path(report["folder"]) / "report" / "report.md").read_text()
