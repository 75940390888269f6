"""Where a result came from: the code's git revision, the package versions, and config hashes.

Every trials row records them (``git_rev``, ``*_version``, ``config_hash``,
``config_json``). Nothing heavy is imported: versions are read from the
installed metadata, not from torch or ray.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from sweep.errors import ConfigError

__all__ = ["DISTRIBUTIONS", "Provenance", "canonical_json", "config_hash", "git_rev",
           "package_versions"]

_PROJECT_ROOT = Path(__file__).resolve().parents[2]


def git_rev() -> str:
    """The project's git commit (``-dirty`` if tracked files changed) or "unknown"; never raises."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # a read must not take the index lock

    def git(*args: str) -> str:
        out = subprocess.run(["git", "-C", str(_PROJECT_ROOT), *args], capture_output=True,
                             text=True, timeout=10, env=env, check=True)
        return out.stdout.strip()

    try:
        # An installed (non-editable) copy may sit inside some other repository.
        if Path(git("rev-parse", "--show-toplevel")).resolve() != _PROJECT_ROOT:
            return "unknown"
        rev = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return f"{rev}-dirty" if dirty else rev
    except (OSError, subprocess.SubprocessError, ValueError):
        return "unknown"


#: Provenance column prefix -> distribution name.
DISTRIBUTIONS = {"torch": "torch", "open_clip": "open_clip_torch", "ray": "ray",
                  "optuna": "optuna", "promptsweep": "promptsweep"}


def package_versions() -> dict[str, str | None]:
    """Versions of Python and the packages a result depends on (None: not installed).

    Read from the installed metadata, so nothing heavy (torch, ray) is imported.
    """
    out: dict[str, str | None] = {"python": ".".join(map(str, sys.version_info[:3]))}
    for key, dist in DISTRIBUTIONS.items():
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = None
    return out


@dataclass(frozen=True)
class Provenance:
    """Where a result came from: the code revision and the package versions."""

    git_rev: str = "unknown"
    versions: Mapping[str, str | None] = field(default_factory=dict)

    @staticmethod
    @functools.lru_cache(maxsize=1)
    def current() -> Provenance:
        """This process's provenance (computed once: one git call per process, not per trial)."""
        return Provenance(git_rev(), package_versions())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the same value gives the same text."""
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          default=_json_default)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot serialise to JSON: {exc}") from exc


def config_hash(config: Mapping[str, Any]) -> str:
    """The sha256 (hex) of ``config``'s canonical JSON: independent of key order."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()
