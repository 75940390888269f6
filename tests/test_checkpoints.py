"""The trials' checkpoints are signed with this user's key and read only once the signature
checks; results files follow the umask, checkpoints stay 0600. No Ray: the store's body is
plain Python (``sweep.checkpoints``). Planted checkpoints in a plan are tests/test_resume.py's,
in a real sweep's --resume tests/test_restarts.py's."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from sweep.checkpoints import (
    CheckpointRefused,
    CheckpointStore,
    checkpoint_path,
    key_file,
    load_key,
    seal,
    unseal,
)
from sweep.errors import ConfigError

HEADER = {"setting": {"method": "bbt", "params": {"sigma0": 0.5}}, "checkpoint": 3}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_key_is_made_once_only_this_user_can_read_it_and_it_lives_outside_results(
        tmp_path, monkeypatch, umask_022):
    monkeypatch.delenv("PROMPTSWEEP_CHECKPOINT_KEY")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    path = key_file()
    assert path == tmp_path / "config" / "promptsweep" / "checkpoint-key"
    assert load_key(path) is None and not path.exists()  # reading makes none
    key = load_key(path, create=True)
    assert len(key) == 32 and load_key(path, create=True) == key == load_key(path)
    assert (_mode(path), _mode(path.parent)) == (0o600, 0o700)
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint-key"]  # no temporary left


@pytest.mark.parametrize("problem", ["readable by others", "not a key"])
def test_a_key_file_that_proves_nothing_fails_in_one_line(tmp_path, problem):
    path = tmp_path / "checkpoint-key"
    load_key(path, create=True)
    if problem == "readable by others":
        path.chmod(0o644)
    else:
        path.write_text("a colleague's notes\n")
    with pytest.raises(ConfigError) as info:
        load_key(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert ("chmod 600" if problem == "readable by others" else "not a checkpoint key") in \
        str(info.value)


def test_a_key_that_cannot_be_made_fails_in_one_line_naming_the_way_out(tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ConfigError) as info:
        load_key(tmp_path / "a-file" / "checkpoint-key", create=True)
    assert "\n" not in str(info.value) and "PROMPTSWEEP_CHECKPOINT_KEY" in str(info.value)


def test_a_signed_checkpoint_reads_back_and_any_change_is_refused():
    key, state = b"k" * 32, b"\x80\x05state"
    blob = seal(key, "bbt-digits-4shot-000", HEADER, state)
    assert unseal(key, "bbt-digits-4shot-000", blob) == (HEADER, state)
    head, signature, line, _ = blob.split(b"\n", 3)
    changed = {
        "another key": (b"j" * 32, "bbt-digits-4shot-000", blob),
        "another setting's file": (key, "bbt-digits-4shot-001", blob),
        "another state": (key, "bbt-digits-4shot-000", blob[:-1] + b"!"),
        "another header": (key, "bbt-digits-4shot-000",
                           b"\n".join([head, signature, line.replace(b"0.5", b"0.6"), state])),
    }
    for k, sample_id, data in changed.values():
        with pytest.raises(CheckpointRefused, match="signature does not match"):
            unseal(k, sample_id, data)
    with pytest.raises(CheckpointRefused, match="not a signed promptsweep checkpoint"):
        unseal(key, "bbt-digits-4shot-000", state)  # a bare pickle
    with pytest.raises(CheckpointRefused, match="no checkpoint key here"):
        unseal(None, "bbt-digits-4shot-000", blob)


def test_the_store_hands_out_its_own_checkpoints_and_refuses_planted_ones(tmp_path, planted,
                                                                          umask_022):
    code, marker = planted
    store = CheckpointStore(str(tmp_path / "sweep"), str(tmp_path / "key"))
    store.put("bbt-digits-4shot-000", HEADER, b"state")
    path = checkpoint_path(tmp_path / "sweep", "bbt-digits-4shot-000")
    assert _mode(path) == 0o600  # whatever the umask
    assert store.get("bbt-digits-4shot-000") == (HEADER, b"state")
    assert store.get("bbt-digits-4shot-001") is None  # none
    path.write_bytes(code)
    with pytest.warns(UserWarning) as seen:
        assert store.get("bbt-digits-4shot-000") is None  # the trial starts from the start
    (line,) = [str(w.message) for w in seen]
    assert line.startswith(f"checkpoint {path} refused (not a signed") and "\n" not in line
    assert not marker.exists()


def test_results_files_follow_the_umask(tmp_path, umask_022):
    from sweep.budget import CheckpointRecord, QueryCounts
    from sweep.results import INFO_FILE, ResultsWriter, SweepInfo, TrialRecord, write_info

    writer = ResultsWriter(tmp_path, "modes", {"sigma0": "float"})
    queries = QueryCounts(candidate_evals=40)
    writer.write(TrialRecord(
        trial_id="t-s1", sweep="modes", sample_id="t", method="bbt", model="m",
        dataset="digits", shots=4, seed=1, budget=40, budget_unit="candidate_evals",
        params={"sigma0": 0.5}, queries=queries,
        checkpoints=[CheckpointRecord(0, queries, 1.0, 0.5, 0.5, 1.0)]))
    write_info(tmp_path / "modes", SweepInfo(name="modes"))
    files = [*sorted((tmp_path / "modes").glob("*/part-*.parquet")), tmp_path / "modes" / INFO_FILE]
    assert [(f.parent.name, f.name, _mode(f)) for f in files] == [
        ("curves", "part-t-s1.parquet", 0o644), ("trials", "part-t-s1.parquet", 0o644),
        ("modes", INFO_FILE, 0o644)]


#: What can turn bytes into code: modules and calls that readers of a results folder never use.
UNPICKLERS = {"pickle", "cloudpickle", "ray.cloudpickle", "dill", "joblib", "shelve", "marshal"}
UNPICKLING_CALLS = {"read_pickle", "from_bytes", "load", "loads"}


@pytest.mark.parametrize("package", ["sweep/report", "sweep/results", "sweep/tuning/plan.py",
                                     "sweep/launch.py", "sweep/checkpoints.py"])
def test_what_reads_a_results_folder_has_no_way_to_unpickle(package):
    """The report, the reader, the plan and the launcher's --plan and --dry-run: no unpickler
    imported, and no ``load``/``loads``/``from_bytes`` but JSON's."""
    import ast

    root = Path(__file__).resolve().parents[1]
    found = []
    for path in sorted((root / package).rglob("*.py") if (root / package).is_dir()
                       else [root / package]):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.name}:{node.lineno} imports {n}" for n in names
                      if n in UNPICKLERS or n.split(".")[0] in {"pickle", "dill", "joblib"}]
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr in UNPICKLING_CALLS and not (
                        isinstance(node.func.value, ast.Name) and node.func.value.id == "json"):
                found.append(f"{path.name}:{node.lineno} calls .{node.func.attr}")
    assert found == []
