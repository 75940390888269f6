"""Every Ray that promptsweep starts or joins is authenticated, and Ray is pinned to what is tested.

The launcher's private local Ray, started in a process of its own (as ``python -m
sweep.launch`` starts it, with a home of its own): clients without its token are refused, and
neither the user's token nor ``~/.ray/auth_token`` is used or written. A cluster that refuses
the launcher says so in one line. The cluster templates' token authentication is checked
offline by tests/test_cluster.py (gpu.yaml) and tests/test_clusters_offline.py (slurm.sh,
rayjob.yaml).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import ray
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from sweep.errors import TESTED_RAY, ConfigError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]

#: Started by the test in a process of its own: the launcher's start_ray, then three clients.
LAUNCHER = r"""
import json, os, subprocess, sys

import ray

from sweep.tuning import start_ray

assert start_ray() is True
address = ray.get_runtime_context().gcs_address
probe = '''
from ray._raylet import GcsClient
try:
    GcsClient(address=%r).get_all_node_info(timeout=20)
    print("admitted")
except Exception as exc:
    print("refused:", type(exc).__name__, str(exc).splitlines()[0][:120])
''' % address
token_file = os.environ["RAY_AUTH_TOKEN_PATH"]
clients = {
    "without a token": {"RAY_AUTH_MODE": "disabled"},
    "with the user's token": {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": sys.argv[1]},
    "with its token": {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": token_file},
}
env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
runs = {name: subprocess.Popen([sys.executable, "-c", probe], env={**env, **auth}, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for name, auth in clients.items()}
seen = {}
for name, run in runs.items():
    out, err = run.communicate(timeout=120)
    seen[name] = (out.strip().splitlines() or [err.strip()[-200:]])[-1]
seen["mode"] = os.environ["RAY_AUTH_MODE"]
seen["token file"] = [token_file, oct(os.stat(token_file).st_mode & 0o7777),
                      oct(os.stat(os.path.dirname(token_file)).st_mode & 0o7777)]
ray.shutdown()
print(json.dumps(seen))
"""


@pytest.mark.slow
def test_the_launchers_local_ray_refuses_clients_without_its_token(tmp_path):
    users = "f" * 64  # the user's own token, for some cluster: not the private Ray's
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.update(HOME=str(tmp_path), RAY_AUTH_TOKEN=users)
    run = subprocess.run([sys.executable, "-c", LAUNCHER, users], cwd=ROOT, env=env, text=True,
                         capture_output=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["with its token"] == "admitted"
    for client in ("without a token", "with the user's token"):
        assert seen[client].startswith("refused: AuthenticationError"), (client, seen[client])
    assert seen["mode"] == "token"
    path, mode, folder = seen["token file"]
    assert (mode, folder) == ("0o600", "0o700") and not path.startswith(str(tmp_path))
    assert not (tmp_path / ".ray").exists(), "the user's ~/.ray was written"


def test_a_cluster_that_refuses_the_launcher_says_so_in_one_line(monkeypatch):
    from sweep.tuning import start_ray

    def refuse(**kwargs):
        raise ray.exceptions.AuthenticationError(
            "RPC error: InvalidAuthToken: Authentication token is missing or incorrect.\nMore.")

    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # said: nothing of Ray's is reloaded
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(ConfigError) as info:
        start_ray("10.0.0.7:6379")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("the Ray cluster at 10.0.0.7:6379 refused this process "
                              "(RAY_AUTH_MODE=token: RPC error: InvalidAuthToken")
    assert "docs/security.md" in message and "RAY_AUTH_MODE=disabled" in message


def test_ray_is_pinned_to_the_versions_the_suite_runs():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (ray_req,) = [Requirement(r) for r in project["dependencies"] if Requirement(r).name == "ray"]
    assert ray_req.specifier == SpecifierSet(TESTED_RAY), \
        "pyproject.toml's Ray range and sweep.errors.TESTED_RAY differ"
    assert ray_req.specifier.contains(ray.__version__), (
        f"this suite runs Ray {ray.__version__}, outside {TESTED_RAY}: once the whole suite "
        "passes on it, widen the range (pyproject.toml, sweep.errors.TESTED_RAY)")
    assert "tune" in ray_req.extras


def _starts_ray(tree: ast.AST) -> list[int]:
    """Lines that start a Ray or join one: ``ray.init(...)``, ``Cluster(...)``."""
    return [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Call) and (
        (isinstance(node.func, ast.Attribute) and node.func.attr == "init"
         and isinstance(node.func.value, ast.Name) and node.func.value.id == "ray")
        or (isinstance(node.func, ast.Name) and node.func.id == "Cluster"))]


def test_every_ray_promptsweep_starts_says_its_auth_mode():
    """A process that leaves RAY_AUTH_MODE unset follows whatever ~/.ray/auth_token happens to
    exist: each place that starts or joins a Ray sets it first (sweep.tuning.auth)."""
    unsaid = []
    for path in sorted([*ROOT.glob("sweep/**/*.py"), *ROOT.glob("bench/*.py"),
                        *ROOT.glob("tests/*.py")]):
        text = path.read_text()
        lines = _starts_ray(ast.parse(text))
        said = ("private_token()" in text or "joined_mode()" in text
                or path.name == Path(__file__).name)
        if lines and not said:
            unsaid.append(f"{path.relative_to(ROOT)}:{lines}")
    assert unsaid == [], "start Ray through sweep.tuning.start_ray, or say RAY_AUTH_MODE first"
