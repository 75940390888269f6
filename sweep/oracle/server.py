"""The oracle actors' side of the pool: what runs in each actor (``sweep.oracle.pool`` sends it work).

``ServerBase`` is what every actor does whatever computes: it takes requests
while one runs, runs them on its one device thread by priority and arrival, or
merged (``sweep.oracle.merging``), and tells each caller the work it still has
outstanding. ``OracleServer`` computes with a CLIP: one model, an oracle per
(task, layout), no budget (the trials count). torch and open_clip are imported
when an ``OracleServer`` starts, in its actor, never by a trial's process.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from methods.base import Evaluation
from sweep.budget import BudgetSpec
from sweep.errors import DataError, PromptTuningError
from sweep.oracle.merging import DeviceQueue
from sweep.oracle.requests import PromptLayout, TaskKey
from sweep.spec import ModelSpec

__all__ = ["ActorSetupError", "OracleServer", "ServerBase"]

#: What to fix when an actor's setup fails at each stage: the key, or the node's files.
_FIX = {
    "device": "[resources] gpus_per_actor (0: CPUs), or the node's CUDA",
    "model": "[model] (its name, pretrained tag or checkpoint), or the node's Hugging Face "
             "cache ($HF_HOME)",
    "cache folder": "[data] cache, or $PROMPTSWEEP_CACHE on the node",
    "data": "[data] root: every node reads the data at that path",
}


def _node() -> tuple[str, str | None]:
    """This process's node as the cluster knows it (its address and id), else the host name."""
    try:
        import ray

        if ray.is_initialized():
            here = ray.get_runtime_context().get_node_id()
            for node in ray.nodes():
                if node["NodeID"] == here:
                    return node["NodeManagerAddress"], here
    except Exception:  # noqa: BLE001 - the host name says enough
        pass
    return socket.gethostname(), None


class ActorSetupError(PromptTuningError, RuntimeError):
    """An oracle actor could not be set up on its node: its device, model, cache folder or
    data. No trial can run there, so the sweep stops (``sweep.tuning``); ``details`` keeps
    the traceback for the sweep's logs."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details

    def __reduce__(self):  # the traceback crosses to the driver with the message
        return type(self), (str(self), self.details)

    @classmethod
    def of(cls, exc: BaseException, stage: str) -> ActorSetupError:
        """The error of ``exc``, raised while setting up ``stage`` (a key of ``_FIX``)."""
        return cls(f"the oracle actor on node {_node()[0]} (pid {os.getpid()}) could not set up its "
                   f"{stage}: {type(exc).__name__}: {' '.join(str(exc).split())}; fix "
                   f"{_FIX[stage]}", "".join(traceback.format_exception(exc)))

    @classmethod
    def died_starting(cls, exc: BaseException) -> ActorSetupError:
        """The error of an actor whose process died as it started (Ray's message holds the
        node and the creation task's traceback, whose last line is the cause)."""
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # Ray colours the task's name
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        node = re.search(r"\bip=([^,\s)]+)", text)
        return cls(f"the oracle actor on node {node.group(1) if node else '?'} died as it "
                   f"started: {lines[-1] if lines else type(exc).__name__}", text)


def _probe(folder: Path) -> None:
    """Create and remove a file in ``folder`` (DataError: it cannot be written in)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".probe.", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise DataError(f"cannot write in the folder of decoded images {folder}: "
                        f"{exc.strerror or exc}") from exc


class ServerBase:
    """What every oracle actor does, whatever computes: it takes requests while one runs,
    runs them on one device thread by priority and arrival, or merged, and tells each
    caller the work it still has outstanding.

    Args:
        merge_wait_s: how long a request waits for others to merge with
            (``sweep.oracle.merging``; 0: one request at a time, no merging).
        merge_candidates: a merged batch with this many candidates runs at once.
    """

    #: why this actor could not be set up on its node (None: it was); raised at every request.
    setup_error: ActorSetupError | None = None

    def __init__(self, merge_wait_s: float = 0.0, merge_candidates: int = 256) -> None:
        # Whatever touches the model or the caches runs on its thread: one computation at a time.
        self.device_queue = DeviceQueue(merge_wait_s, merge_candidates)
        self.requests = 0  # requests served: where the pool sends its work
        self._pending = 0  # work (candidates x images) taken and not finished
        self._counts = threading.Lock()

    def serve(self, method: str, work: int, *args, priority: float = 0.0) -> tuple[Any, int]:
        """``method(*args)``, and the work outstanding here when it is done (the pool's load
        figure); its work on the device goes before queued work of lower ``priority``."""
        if self.setup_error is not None:
            raise self.setup_error
        with self._counts:
            self.requests += 1
            self._pending += work
        try:
            with self.device_queue.priority(priority):
                result = getattr(self, method)(*args)
        finally:
            with self._counts:
                self._pending -= work
                left = self._pending
        return result, left

    def pid(self) -> int:
        return os.getpid()

    def place(self) -> dict[str, Any]:
        """Where this actor runs: its node and process (ActorSetupError: it could not be set up
        there). Subclasses add their device."""
        if self.setup_error is not None:
            raise self.setup_error
        address, node_id = _node()
        return {"node": address, "node_id": node_id, "pid": os.getpid()}

    def queueing(self) -> dict[str, float]:
        """Of the latest requests: queueing delays (s, arrival to their forward's start, merging's
        wait included), and requests a forward."""
        delays = np.array(self.device_queue.delays)
        sizes = np.array(self.device_queue.sizes)
        if not len(delays):
            return {"queued_requests": 0}
        return {"queued_requests": len(delays), "delay_mean_s": float(delays.mean()),
                "delay_p50_s": float(np.median(delays)),
                "delay_p95_s": float(np.percentile(delays, 95)), "delay_max_s": float(delays.max()),
                "requests_per_forward_mean": float(sizes.mean()),
                "requests_per_forward_max": int(sizes.max())}


class OracleServer(ServerBase):
    """The body of an oracle actor: one model, an oracle per (task, layout), no budget.

    Args:
        model_spec: the model to load.
        device: "cuda" or "cpu" (None: CUDA when available).
        threads: torch threads (None: torch's default).
        pixel_folder: the node's folder of decoded images (``sweep.data.PixelCache``;
            None: the node's default).
        cache_bytes: the budget of what the actor keeps on its device (image features,
            patch embeddings), shared by all its oracles (None: the device's default).
        merge_wait_s, merge_candidates: merging, as in ``ServerBase``.
        tasks: (data set, data root) of every task the actor may serve, loaded (their file
            lists, not their images) as it starts, so that a node without the data is found
            before any trial runs.

    A setup that fails (no CUDA, the model's weights, a cache folder it cannot write in, a
    data root missing on its node) leaves an actor that raises ``ActorSetupError`` at every
    request and at ``place``, rather than one Ray would restart to fail again.
    """

    def __init__(self, model_spec: ModelSpec, device: str | None = None, threads: int | None = None,
                 pixel_folder: str | None = None, cache_bytes: int | None = None,
                 merge_wait_s: float = 0.0, merge_candidates: int = 256,
                 tasks: tuple[tuple[str, str | None], ...] = ()) -> None:
        super().__init__(merge_wait_s, merge_candidates)
        self._datasets: dict[tuple[str, str | None], Any] = {}
        self._oracles: dict[tuple[TaskKey, PromptLayout], Any] = {}  # ClipOracle
        stage = "device"
        try:
            import torch

            from sweep.data import PixelCache, load_dataset
            from sweep.oracle.images import DeviceCache, ImageStore, default_cache_bytes
            from sweep.oracle.models import load_model, pick_device

            if threads:
                torch.set_num_threads(threads)
            where = pick_device(device)
            stage = "model"
            self.model = load_model(model_spec, where)
            stage = "cache folder"
            pixels = PixelCache(pixel_folder, self.model.pixels[0])
            _probe(pixels.folder)
            budget = default_cache_bytes(self.model.device) if cache_bytes is None else cache_bytes
            self.images = ImageStore(self.model, pixels, DeviceCache(budget))
            stage = "data"
            for dataset, root in tasks:
                self._datasets[(dataset, root)] = load_dataset(dataset, root)
        except Exception as exc:  # noqa: BLE001 - kept, and raised at every request (ServerBase)
            self.setup_error = ActorSetupError.of(exc, stage)

    def place(self) -> dict[str, Any]:
        """Where this actor runs: its node, process and device (ActorSetupError: it could not
        be set up there)."""
        import torch

        here = super().place()
        device = self.model.device
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
        return {**here, "device": str(device) + (f" ({name})" if name else ""),
                "precision": self.model.precision}

    def _oracle(self, key: TaskKey, layout: PromptLayout):
        # Built ones without the device: a request must not queue for it twice.
        oracle = self._oracles.get((key, layout))
        if oracle is not None:
            return oracle
        return self.device_queue.call(lambda: self._build(key, layout))

    def _build(self, key: TaskKey, layout: PromptLayout):
        """The ClipOracle of ``key`` and ``layout``, built on first use."""
        from sweep.data import few_shot, load_dataset
        from sweep.oracle.clip_oracle import ClipOracle

        oracle = self._oracles.get((key, layout))
        if oracle is None:
            ds_key = (key.dataset, key.data_root)
            if ds_key not in self._datasets:  # a task the actor was not started with
                try:
                    self._datasets[ds_key] = load_dataset(key.dataset, key.data_root)
                except DataError as exc:  # the node lacks the data root: no trial can run here
                    raise ActorSetupError.of(exc, "data") from exc
            task = few_shot(self._datasets[ds_key], key.shots, key.seed)
            # Glass box: the actor's model is local, and ``gradient`` serves white-box methods.
            oracle = self._oracles[(key, layout)] = ClipOracle(self.model, task, layout, BudgetSpec(),
                                                               images=self.images, glass_box=True)
        return oracle

    def info(self, key: TaskKey, layout: PromptLayout) -> dict[str, Any]:
        return self.device_queue.call(lambda: self._info(self._build(key, layout)))

    def _info(self, oracle) -> dict[str, Any]:
        return {
            "text_shape": oracle.text_shape,
            "visual_shape": oracle.visual_shape,
            "initial_text": oracle.initial_text(),
            "initial_visual": oracle.initial_visual(),
            "model_stats": oracle.model_stats(),
            "train_size": oracle.train_size,
            "num_classes": oracle.num_classes,
            "split_sizes": {s: len(getattr(oracle.task, s)) for s in ("val", "test", "dev")
                            if getattr(oracle.task, s) is not None},
            "device": str(oracle.device),
            "precision": oracle.precision,
        }

    def evaluate(self, key: TaskKey, layout: PromptLayout, text, visual, features: bool,
                 subset, views=None) -> Evaluation:
        oracle = self._oracle(key, layout)
        # Requests merge only when they score the same images: the same mini-batch and views.
        merge = ("train", key, layout, features, None if subset is None else subset.tobytes(),
                 None if views is None else views.tobytes())
        return self.device_queue.run(merge, text, visual, _rows(text, visual), lambda t, v: (
            oracle.evaluate(text=t, visual=v, features=features, subset=subset, views=views)))

    def evaluate_split(self, key: TaskKey, layout: PromptLayout, split: str, text, visual,
                       features: bool, images: tuple[int, int] | None = None) -> Evaluation:
        oracle = self._oracle(key, layout)
        return self.device_queue.run((split, key, layout, features, images), text, visual,
                                     _rows(text, visual), lambda t, v: oracle.evaluate_split(
                                         split, text=t, visual=v, features=features, images=images))

    def zero_shot(self, key: TaskKey, layout: PromptLayout, split: str) -> Evaluation:
        return self.device_queue.call(lambda: self._build(key, layout).zero_shot(split))

    def gradient(self, key: TaskKey, layout: PromptLayout, text, visual, subset, views=None):
        """True gradients of the training loss (ClipOracle.gradient), never merged."""
        return self.device_queue.call(lambda: self._build(key, layout).gradient(
            text=text, visual=visual, subset=subset, views=views))

    def memory(self) -> dict[str, int]:
        """Bytes this actor keeps on its device, per kind of entry, with the budget; images
        decoded here; requests served, and the forwards they took (fewer when merged)."""
        queue = self.device_queue
        return queue.call(lambda: {
            **self.images.cache.held(), "images_decoded": self.images.pixels.decoded,
            "requests": self.requests, "evaluations": queue.requests, "forwards": queue.batches})


def _rows(text, visual) -> int:
    return len(text if text is not None else visual)
