"""Ray's token authentication (Ray 2.52 and later) for every Ray that promptsweep starts or joins.

Without it, anyone who reaches a Ray's ports can run code in it, and a private local Ray's
ports are reachable by every user of a shared machine (a Slurm login node). So:

- The launcher's private local Ray (``sweep.tuning.start_ray``) runs with ``RAY_AUTH_MODE=token``
  and a token of its own, 256 random bits made for it, in a file of its own
  (``RAY_AUTH_TOKEN_PATH``: mode 0600 in a 0700 folder, removed when the process ends). The
  user's ``~/.ray/auth_token`` is neither read nor written (Ray 2.59+ writes one, mode 0644,
  for a bare ``ray.init()``), and a ``RAY_AUTH_TOKEN`` of the user's, meant for a cluster, is
  set aside for the process.
- Joining a cluster (``--address``) keeps the user's ``RAY_AUTH_MODE``, and makes it ``token``
  where unset: the cluster templates all run with tokens (``clusters/README.md``). A Ray
  without authentication is joined with ``RAY_AUTH_MODE=disabled`` said explicitly.

Every process promptsweep starts says ``RAY_AUTH_MODE`` explicitly (the launcher, ``bench/``, the
tests' helpers and session): a process that leaves it unset follows whatever
``~/.ray/auth_token`` happens to exist (ray-project/ray#64755). Ray reads the mode and the token
once per process, so both are reloaded after they change (``_reload``: two private parts of
Ray, checked; ``sweep.errors.RayVersionError`` when they move). docs/security.md has the whole
picture; the token stays out of every log and message.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import tempfile
from pathlib import Path

from sweep.errors import RayVersionError

__all__ = ["AUTH_ENV", "joined_mode", "private_token"]

#: Ray's variables of token authentication (precedence: the token, then its file, then
#: ``~/.ray/auth_token``).
AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


#: The token file this process made (``private_token``), while it is the one in use.
_MADE: list[Path] = []


def private_token() -> Path:
    """Give the Rays this process starts from now on a token of their own: a new token in a
    file only this user can read, ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN_PATH`` in this
    process's environment (which Ray's processes inherit); returns the file. Call it before
    ``ray.init`` of a new local Ray, or before ``ray.cluster_utils.Cluster``.

    Once per process: while the environment still names the file made before, that file is
    kept (a second token would leave a Ray started with the first one unreachable)."""
    if _MADE and os.environ.get("RAY_AUTH_TOKEN_PATH") == str(_MADE[-1]) and \
            os.environ.get("RAY_AUTH_MODE") == "token" and _MADE[-1].is_file():
        return _MADE[-1]
    folder = Path(tempfile.mkdtemp(prefix="promptsweep-ray-"))  # 0700
    atexit.register(shutil.rmtree, folder, True)
    path = folder / "auth_token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(secrets.token_hex(32))
    os.environ.pop("RAY_AUTH_TOKEN", None)  # it would win over the file
    os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(path)})
    _reload()
    _MADE.append(path)
    return path


def joined_mode() -> str:
    """The ``RAY_AUTH_MODE`` with which to join a cluster: the user's, else ``token`` (set in
    this process's environment); the token comes from where Ray looks for it."""
    if "RAY_AUTH_MODE" not in os.environ:
        os.environ["RAY_AUTH_MODE"] = "token"
        _reload()
    return os.environ["RAY_AUTH_MODE"]


def _reload() -> None:
    """Make Ray read the authentication mode and token of this process's environment again
    (Ray 2.52-2.60 keep both from the first read; Ray's own ``ray.init`` does the same)."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
    except ImportError as exc:
        raise RayVersionError.moved("ray._raylet.Config and AuthenticationTokenLoader") from exc
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
