"""Decoded images, once per node: a folder of uint8 pixels that every process of the node shares.

Decoding and resizing an image (a JPEG to 224 px: about 200-400 images/s per
core) costs far more than encoding it on a GPU, so a sweep decodes each image
it uses once per node and keeps the result: one ``.npy`` file per image and
preprocessing, uint8 (H, W, 3) at the model's input size, under
``<folder>/<preprocessing>/``. Normalisation is not stored: it is a cheap
affine map done on the device (``sweep.oracle``).

A file's name is a hash of the image's identity and of the preprocessing:
for an image file its resolved path, size and modification time (so an image
replaced on disk is decoded again), for an in-memory array (the embedded
digits) its bytes. Entries are written to a temporary file and renamed, so
no process ever reads half a file, and one process of the node decodes at a
time (a lock file in the folder): the actors of a node, or a preflight and
an actor, that need the same images wait for them instead of decoding them
again. A restarted actor and a resumed sweep find what was decoded before. Nothing is ever evicted: the
folder holds the images of the sweeps run on the node (150 kB an image at
224 px) until it is deleted.

Decoding runs in threads (PIL releases the interpreter lock while it
decodes and resizes); ``fill`` shows a progress bar on large splits.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from sweep.data.splits import ImageRef, Split
from sweep.errors import DataError

__all__ = ["CACHE_ENV", "DEFAULT_CACHE", "PixelCache", "Preprocessing", "node_cache_folder"]

#: Where a node keeps its decoded images unless the specification (``[data] cache``) or
#: the environment variable ``CACHE_ENV`` says otherwise; ``~`` is the node's home folder.
DEFAULT_CACHE = "~/.cache/promptsweep/pixels"
#: The environment variable that moves a node's default cache folder.
CACHE_ENV = "PROMPTSWEEP_CACHE"
#: Splits with more images to decode than this show a progress bar in ``fill``.
_PROGRESS_FROM = 2000
#: one .npy header parsed at a time (``PixelCache._read``).
_HEADER_LOCK = threading.Lock()


@dataclass(frozen=True)
class Preprocessing:
    """The host side of a model's image transform: an RGB PIL image -> its uint8 (H, W, 3) pixels.

    Attributes:
        transform: PIL image -> PIL image (resize, crop: everything before the tensor
            conversion of the model's transform). Picklable: actors receive it.
        key: what identifies ``transform`` (part of every cache key).
    """

    transform: Callable[[Image.Image], Image.Image]
    key: str

    def __call__(self, image: Image.Image) -> np.ndarray:
        return np.asarray(self.transform(image), dtype=np.uint8)


def node_cache_folder() -> Path:
    """This node's default cache folder: ``$PROMPTSWEEP_CACHE``, else ``DEFAULT_CACHE``."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


@contextlib.contextmanager
def _node_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` held by one process of the node at a time (flock)."""
    with open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _identity(ref: ImageRef) -> bytes:
    """What makes an image the same image: a file's path, size and modification time, or an
    array's bytes."""
    if isinstance(ref, np.ndarray):
        return b"array:" + str((ref.shape, ref.dtype.str)).encode() + np.ascontiguousarray(ref).tobytes()
    path = os.path.realpath(ref)
    try:
        stat = os.stat(path)
    except OSError:  # unreadable: decoding will say so, naming the file
        return f"file:{path}".encode()
    return f"file:{path}:{stat.st_size}:{stat.st_mtime_ns}".encode()


class PixelCache:
    """The decoded pixels of a node's images for one preprocessing, in ``folder``.

    Args:
        folder: the node-local cache folder (``~`` is expanded here, on the node);
            None: the node's default (``node_cache_folder``).
        preprocessing: the model's host-side transform.
        workers: decoding threads (default: the CPUs of this process, at most 16).
    """

    def __init__(self, folder: str | Path | None, preprocessing: Preprocessing,
                 workers: int | None = None) -> None:
        self.preprocessing = preprocessing
        self.workers = workers or min(16, _cpus())
        base = node_cache_folder() if folder is None else Path(folder).expanduser()
        prep = hashlib.sha256(preprocessing.key.encode()).hexdigest()[:16]
        self.folder = base / prep
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"cannot create the folder of decoded images {self.folder}: "
                            f"{exc.strerror or exc}; set [data] cache or ${CACHE_ENV} to a "
                            "writable node-local folder") from exc
        #: images this object decoded (not found in the folder): what "decode once" counts.
        self.decoded = 0
        self._lock = threading.Lock()
        self._paths: weakref.WeakKeyDictionary[Split, list[Path]] = weakref.WeakKeyDictionary()
        self._ids: weakref.WeakKeyDictionary[Split, str] = weakref.WeakKeyDictionary()

    # ------------------------------------------------------------------ entries
    def _entries(self, split: Split) -> list[Path]:
        """Each image's file in the folder (identities are taken once per split and process)."""
        paths = self._paths.get(split)
        if paths is None:
            paths = []
            for ref in split.images:
                digest = hashlib.sha256(_identity(ref)).hexdigest()
                paths.append(self.folder / digest[:2] / f"{digest}.npy")
            self._paths[split] = paths
        return paths

    def identity(self, split: Split) -> str:
        """One digest for the images of ``split`` in order: equal splits share device caches."""
        digest = self._ids.get(split)
        if digest is None:
            h = hashlib.sha256()
            for path in self._entries(split):
                h.update(path.name.encode())
            digest = self._ids[split] = h.hexdigest()
        return digest

    def _decode(self, split: Split, i: int, path: Path) -> np.ndarray:
        pixels = self.preprocessing(split.load(i))  # DataError naming an unreadable file
        try:
            path.parent.mkdir(exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except OSError as exc:
            raise DataError(f"cannot write decoded images to {self.folder}: "
                            f"{exc.strerror or exc}") from exc
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, pixels)
            os.replace(tmp, path)
        except OSError as exc:  # a full disk: the request fails, no half file is left
            Path(tmp).unlink(missing_ok=True)
            raise DataError(f"cannot write decoded images to {self.folder}: "
                            f"{exc.strerror or exc}") from exc
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        with self._lock:
            self.decoded += 1
        return pixels

    @staticmethod
    def _read(path: Path) -> np.ndarray | None:
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                # numpy parses a .npy header with ast.literal_eval, and CPython 3.11.7's
                # parser is not safe in threads at once (gh-106905: "AST constructor recursion
                # depth mismatch", seen here in CI): the decode pool parses one at a time.
                with _HEADER_LOCK:
                    header = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                              else np.lib.format.read_array_header_2_0(f))
                shape, fortran, dtype = header
                data = np.fromfile(f, dtype=dtype, count=int(np.prod(shape)))
            if fortran or data.size != int(np.prod(shape)):
                return None  # not one of ours, or cut short: decode it again
            return data.reshape(shape)
        except (OSError, ValueError):  # not decoded yet (or a damaged file)
            return None

    def _get(self, split: Split, i: int, path: Path, bar) -> np.ndarray:
        pixels = self._read(path)  # another process may have decoded it meanwhile
        if pixels is None:
            pixels = self._decode(split, i, path)
            if bar is not None:
                bar.update(1)
        return pixels

    def _run(self, split: Split, order: Sequence[int], bar) -> list[np.ndarray]:
        """Each image's pixels: read where decoded (one read, no stat), the rest decoded."""
        entries = self._entries(split)
        with ThreadPoolExecutor(self.workers) as pool:
            got = list(pool.map(lambda i: self._read(entries[i]), order))
            missing = [k for k, pixels in enumerate(got) if pixels is None]
            if missing:
                # One decoder per node at a time (it uses every thread): the processes that
                # wait find the images decoded, so each image is decoded once.
                with _node_lock(self.folder / ".decoding.lock"):
                    decoded = pool.map(lambda k: self._get(split, order[k], entries[order[k]], bar),
                                       missing)
                    for k, pixels in zip(missing, decoded):
                        got[k] = pixels
        return got

    def _bar(self, split: Split, order: Sequence[int], progress: bool):
        if not progress:
            return None
        entries = self._entries(split)
        todo = sum(not entries[i].is_file() for i in order)
        if todo <= _PROGRESS_FROM:
            return None
        from tqdm import tqdm  # the driver's preflight, on large splits

        return tqdm(total=todo, desc="decoding images", unit="image")

    # ------------------------------------------------------------------ reading
    def pixels(self, split: Split, indices: Sequence[int] | np.ndarray | None = None,
               progress: bool = False) -> np.ndarray:
        """uint8 (n, H, W, 3) pixels of ``split``'s images ``indices`` (default: all), in order.

        Images not in the folder yet are decoded (in threads) and stored.

        Raises:
            DataError: an image cannot be read; it names the file.
        """
        order = list(range(len(split))) if indices is None else [int(i) for i in indices]
        bar = self._bar(split, order, progress)
        try:
            images = self._run(split, order, bar)
        finally:
            if bar is not None:
                bar.close()
        if not images:
            raise ValueError("pixels() needs at least one image")
        return np.stack(images)

    def batches(self, split: Split, indices: Sequence[int] | np.ndarray | None = None,
                size: int = 256) -> Iterator[np.ndarray]:
        """``pixels`` in batches of ``size`` images: how a split too large to hold streams."""
        order = np.arange(len(split)) if indices is None else np.asarray(indices, dtype=np.int64)
        for start in range(0, len(order), size):
            yield self.pixels(split, order[start:start + size])

    def fill(self, split: Split, progress: bool = True) -> int:
        """Decode and store every image of ``split`` not in the folder yet; returns how many.

        Raises:
            DataError: an image cannot be read; it names the file.
        """
        before = self.decoded
        entries = self._entries(split)
        missing = [i for i in range(len(split)) if not entries[i].is_file()]  # nothing read
        if not missing:
            return 0
        bar = self._bar(split, missing, progress)
        try:
            with _node_lock(self.folder / ".decoding.lock"), ThreadPoolExecutor(self.workers) as pool:
                for _ in pool.map(lambda i: self._get(split, i, entries[i], bar), missing):
                    pass  # stored: not kept in memory
        finally:
            if bar is not None:
                bar.close()
        return self.decoded - before
