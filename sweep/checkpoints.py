"""Budget checkpoints of running trials, kept on the driver's node: a trial lost with its node, its
process or the launcher goes on from its last checkpoint, not from its first query.

At every budget checkpoint a trial sends its state to the ``CheckpointStore``, a small Ray actor
on the driver's node: a header of plain data (the trial's setting, as JSON) and the state
itself (``sweep.tuning.trial.TrialState``: each seed's method, query counts, mini-batch stream
and records, pickled). The store signs both and writes them whole to
``results/<sweep>/checkpoints/<sample_id>.pkl`` (a temporary file, fsync, rename; mode 0600). A
trial that starts asks the store for its setting's checkpoint and resumes from it: Ray Tune
starting again a trial whose process was lost (``[resources] trial_restarts``), or ``--resume``
after the launcher stopped, whose plan reruns each checkpointed setting with its parameters
(``sweep.tuning.plan``, which reads the header only). The driver removes a checkpoint once the
trial's rows are written.

On the driver's node and not the trial's: a cluster's nodes need share no disk, and a node
that goes takes its own disk with it.

A results folder is data: it travels (to a colleague, into a group's folder, with a paper), and
``cp`` or ``tar`` makes the receiver the owner of every file in it, so neither its place nor its
owner proves where a file came from. Unpickling runs whatever code the pickle names, so a
checkpoint is unpickled only once it is proven to be this user's own: the store signs each one
with an HMAC-SHA256 key kept outside every results folder (``key_file``: the user's
configuration folder, made 0600 on first use), and checks the signature before it hands a
checkpoint to a trial; the plan checks it before it reads a header, and never unpickles. Any
other file is refused with one line naming it, and its setting runs from the start. The key is
read on the driver's node only (the plan and the store run there); the trials on other nodes
need none, as they unpickle only what the store checked.

Why a key rather than a format that holds no code: a trial's state holds the methods' own
objects (pycma's and pypop7's optimisers, numpy generators, torch adapters and their
optimisers), whose exact state a resumed trial needs to end as one never stopped. The methods'
``state_dict`` does not make it code-free: pycma's and pypop7's runs are saved the libraries' own
way, as pickles inside it (``methods/es_subspace.py``, ``methods/es_pypop.py``), and a plugin's
method may hold anything. A code-free format would need a serialisation of every library
object, kept in step with each library's internals; a signature covers them all, today's and
tomorrow's, in a few lines of the standard library.

File layout (``seal``)::

    promptsweep checkpoint 1\\n     the format
    <HMAC-SHA256, 64 hex digits>\\n  over the format, the sample id, the header and the state
    <header: JSON, one line>\\n
    <state: bytes (a pickle)>

Like ``sweep.keeper``, this module imports nothing heavy: the store's process loads no torch.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import tempfile
import warnings
from pathlib import Path
from typing import Any

from sweep.errors import ConfigError

__all__ = ["CHECKPOINTS", "KEY_ENV", "CheckpointRefused", "CheckpointStore", "checkpoint_path",
           "key_file", "load_key", "read_checkpoint", "refused", "remove_checkpoint", "seal",
           "unseal"]

#: The folder of a sweep's checkpoints, beside trials/ and curves/.
CHECKPOINTS = "checkpoints"
_SUFFIX = ".pkl"
_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
_FORMAT = b"promptsweep checkpoint 1"
#: The environment variable that names the key file, where the default will not do (a
#: Kubernetes pod's home does not outlive the pod: clusters/rayjob.yaml).
KEY_ENV = "PROMPTSWEEP_CHECKPOINT_KEY"


class CheckpointRefused(ValueError):
    """A file that is not a checkpoint of this user's runs (its message says why)."""


def checkpoint_path(results_dir: Path, sample_id: str) -> Path:
    if not _NAME.match(sample_id):
        raise ValueError(f"sample id {sample_id!r} cannot name a checkpoint file")
    return Path(results_dir) / CHECKPOINTS / f"{sample_id}{_SUFFIX}"


def remove_checkpoint(results_dir: Path, sample_id: str) -> None:
    """Forget ``sample_id``'s checkpoint (its rows are written); the folder goes once empty."""
    path = checkpoint_path(results_dir, sample_id)
    path.unlink(missing_ok=True)
    try:
        path.parent.rmdir()
    except OSError:
        pass  # other trials' checkpoints, or none was ever written


# ---------------------------------------------------------------- the key


def key_file() -> Path:
    """Where this user's checkpoint key is: ``$PROMPTSWEEP_CHECKPOINT_KEY``, else
    ``$XDG_CONFIG_HOME/promptsweep/checkpoint-key`` (``~/.config`` without it)."""
    if os.environ.get(KEY_ENV):
        return Path(os.environ[KEY_ENV]).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config).expanduser() / "promptsweep" / "checkpoint-key"


def load_key(path: Path, create: bool = False) -> bytes | None:
    """The key in ``path`` (256 bits, as hex); made there, 0600, if missing and ``create``,
    else None.

    Raises:
        ConfigError: the file is not a key, another user's, or readable by other users (a key
            others can read proves nothing), or it cannot be made.
    """
    path = Path(path)
    if create and not path.exists():
        _make_key(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the checkpoint key {path}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        text = f.read(200)
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ConfigError(f"the checkpoint key {path} is another user's or readable by others "
                          f"(mode {stat.filemode(info.st_mode)}): it proves nothing; "
                          f"chmod 600 {path}, or remove it to make a new one")
    try:
        key = bytes.fromhex(text.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) < 32:
        raise ConfigError(f"{path} is not a checkpoint key (64 hex digits); remove it to make "
                          "a new one")
    return key


def _make_key(path: Path) -> None:
    """Write a new key to ``path`` unless another process got there first (its key stays)."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".checkpoint-key.", dir=path.parent)  # 0600
        try:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(secrets.token_hex(32) + "\n")
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # never replaces a key another process made meanwhile
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    except OSError as exc:
        raise ConfigError(f"cannot make the checkpoint key {path}: {exc.strerror or exc}; set "
                          f"{KEY_ENV} to a file of yours elsewhere") from exc


# ---------------------------------------------------------------- signed files


def _signature(key: bytes, sample_id: str, header: bytes, state: bytes) -> bytes:
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in (_FORMAT, sample_id.encode(), header):
        mac.update(len(part).to_bytes(8, "big") + part)
    mac.update(state)
    return mac.hexdigest().encode("ascii")


def seal(key: bytes, sample_id: str, header: dict[str, Any], state: bytes) -> bytes:
    """A checkpoint file's bytes: ``header`` (plain data) and ``state``, signed with ``key``
    for ``sample_id``."""
    line = json.dumps(header, sort_keys=True).encode()
    return b"\n".join([_FORMAT, _signature(key, sample_id, line, state), line, state])


def unseal(key: bytes | None, sample_id: str, blob: bytes) -> tuple[dict[str, Any], bytes]:
    """The header and state of a checkpoint of ``sample_id``, once its signature is checked
    (nothing is unpickled).

    Raises:
        CheckpointRefused: no key here, not a checkpoint of this format, or a signature that
            does not match (another user's or machine's key, another setting's file, altered).
    """
    parts = blob.split(b"\n", 3)
    if len(parts) != 4 or parts[0] != _FORMAT:
        raise CheckpointRefused("not a signed promptsweep checkpoint")
    if key is None:
        raise CheckpointRefused(f"there is no checkpoint key here ({key_file()}) to check it with")
    _, signature, line, state = parts
    if not hmac.compare_digest(signature, _signature(key, sample_id, line, state)):
        raise CheckpointRefused("its signature does not match this user's checkpoint key: it "
                                "was made by another user or machine, or altered")
    try:
        header = json.loads(line)
    except ValueError as exc:  # signed, so ours: a header of another version
        raise CheckpointRefused(f"its header does not read ({exc})") from exc
    return header, state


def read_checkpoint(path: Path, key: bytes | None) -> tuple[dict[str, Any], bytes]:
    """The checked header and state of the checkpoint file ``path`` (CheckpointRefused, OSError)."""
    return unseal(key, Path(path).stem, Path(path).read_bytes())


def refused(path: Path, reason: object) -> str:
    """The one line that says a checkpoint file is not resumed."""
    return f"checkpoint {path} refused ({reason}); its setting runs from the start"


class CheckpointStore:
    """The latest checkpoint of each running trial, as signed files in ``results_dir``/checkpoints
    (the body of a Ray actor on the driver's node, whose ``key_file`` it reads)."""

    def __init__(self, results_dir: str, key_file: str) -> None:
        self.results_dir = Path(results_dir)
        self.key_file = Path(key_file)
        self._key = load_key(self.key_file, create=True)

    def put(self, sample_id: str, header: dict[str, Any], state: bytes) -> None:
        """Keep ``header`` and ``state`` as ``sample_id``'s checkpoint, whole or not at all."""
        final = checkpoint_path(self.results_dir, sample_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        # mkstemp's 0600: a trial's state is the user's own, whatever the umask.
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(seal(self._key, sample_id, header, state))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, sample_id: str) -> tuple[dict[str, Any], bytes] | None:
        """``sample_id``'s checked checkpoint (header, state), or None if it has none, or one
        that is refused (with a warning)."""
        path = checkpoint_path(self.results_dir, sample_id)
        try:
            return read_checkpoint(path, self._key)
        except FileNotFoundError:
            return None
        except CheckpointRefused as exc:
            warnings.warn(refused(path, exc), stacklevel=2)
            return None
