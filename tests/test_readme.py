"""What the README and the method pages say, checked: the method and fidelity tables
(docs/methods.md) against the registered methods and defaults; the README's quick start and
its real sweep's specification, run at a small size."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pandas as pd
import pytest

import methods

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
METHODS_PAGE = (ROOT / "docs" / "methods.md").read_text()


def _table(heading_line: str) -> list[list[str]]:
    """The cells of the first table of docs/methods.md after the line that starts with
    ``heading_line``."""
    lines = METHODS_PAGE.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(heading_line))
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
        elif rows:
            break
    return rows[1:]  # past the rule under the header


def test_the_method_table_lists_every_registered_method():
    rows = _table("| name | what | search space | budget (default) |")
    listed = {name for row in rows for name in re.findall(r"`([a-z0-9-]+)`", row[0])}
    assert listed == set(methods.REGISTRY.names())


def test_the_fidelity_table_matches_the_registered_defaults_and_versions():
    rows = _table("| method (version) | setting | release (file) | promptsweep default |")
    checked = set()
    for row in rows:
        name, version = re.fullmatch(r"`([a-z0-9-]+)` \((\d+)\)", row[0]).groups()
        assert int(version) == methods.REGISTRY.version(name), name
        config = methods.REGISTRY.make_config(name)
        pairs = re.findall(r"`(\w+) = ([^`]+)`", row[3])
        assert pairs, row
        for field, value in pairs:
            assert getattr(config, field) == ast.literal_eval(value), (name, field)
            checked.add((name, field))
    # every published method has a row
    assert {n for n, _ in checked} >= {"bpt-vlm", "bbt", "cbbt", "cbbt-tip", "zip",
                                       "blackvip-tokens"}


def test_the_readme_stays_short():
    assert len(README) <= 15_000, f"README.md has {len(README):,} characters"


def test_the_readmes_real_sweep_parses_and_plans_without_its_data(tmp_path, capsys):
    from sweep.launch import main

    spec = re.search(r"```toml\n(.*?)```", README, re.S).group(1)
    (tmp_path / "pets16.toml").write_text(spec)
    assert main([str(tmp_path / "pets16.toml"), "--plan", "--results", str(tmp_path)]) == 0
    plan = capsys.readouterr().out
    assert "oracle actors: 4 x 1 GPU" in plan and "cbbt-OxfordPets-16shot" in plan
    assert "total:" in plan and "GPU hours" in plan


@pytest.mark.ray
@pytest.mark.slow
def test_the_quick_start_runs_at_a_smoke_tests_size(ray_session, tmp_path, capsys):
    """`make run` (python -m sweep.launch) cut to one seed, one setting, 120 evaluations, then
    the two commands the quick start shows on its results."""
    import subprocess
    import sys

    from sweep.launch import main
    from sweep.report.__main__ import main as report

    assert "python -m sweep.report results/default" in README
    assert main(["--smoke-test", "--quiet", "--results", str(tmp_path)]) == 0
    trials = pd.read_parquet(tmp_path / "default-smoke" / "trials")
    assert set(trials["seed"]) == {1} and trials["sample_id"].str.endswith("-000").all()
    assert (trials["status"] == "completed").all() and (trials["budget"] == 120).all()
    assert (trials["queries_candidate_evals"] <= 120).all()
    assert report([str(tmp_path / "default-smoke")]) == 0
    one_liner = re.search(r"-c \"(import pandas as pd; .*?)\"", README).group(1)
    done = subprocess.run([sys.executable, "-c", one_liner.replace("results/default",
                                                                   "default-smoke")],
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0 and "bpt-vlm" in done.stdout, done.stderr
