"""Requests that wait at the same time for the same computation, merged into one forward pass.

An oracle actor serves several trials at once (a threaded Ray actor). Requests
that ask the same of the same oracle (one task, layout, channel, split,
mini-batch and feature flag) differ only in their candidates, so they can be
one batch: the first to arrive waits up to ``wait_s`` for others (or until
the batch holds ``max_candidates``), then the batch runs as one request and
each request gets its own rows; requests that arrive later form the next
batch. (Closing a batch as soon as the device is free, instead of after
``wait_s``, gave smaller batches and fewer requests a second here.) On a GPU, where dispatching a request costs more than computing a
few candidates, this turns many small forwards into one.

A batch evaluates each candidate as a request of its own would, to float
rounding: the oracle's batched evaluation equals the one-at-a-time one to 1e-5
in fp32, and which requests meet in a batch depends on timing. So merging
changes results in the last bits and is off (``wait_s`` = 0) unless asked for;
off, an actor serves one request at a time, as before, and tables repeat bit
for bit.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import numpy as np

from methods.base import Evaluation

__all__ = ["FifoLock", "Merger", "split_evaluation"]

#: Queueing delays and batch sizes a merger keeps (the latest ones).
RECORDS = 100_000


def split_evaluation(merged: Evaluation, counts: list[int]) -> list[Evaluation]:
    """The rows of each request of a merged batch, in order (``counts`` candidates each)."""
    bounds = np.cumsum([0, *counts])
    out = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        rows = slice(int(start), int(stop))
        image = merged.image_features
        if image is not None and image.shape[0] > 1:  # per candidate with visual prompts
            image = image[rows]
        out.append(Evaluation(
            losses=merged.losses[rows],
            accuracies=None if merged.accuracies is None else merged.accuracies[rows],
            text_features=None if merged.text_features is None else merged.text_features[rows],
            image_features=image, labels=merged.labels, logit_scale=merged.logit_scale))
    return out


class FifoLock:
    """A lock that waiting threads get in the order they asked for it.

    ``threading.Lock`` wakes waiters in no set order: under load a request could wait
    behind many that arrived after it, which shows as a long tail of queueing delay.
    Not reentrant.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._next = self._serving = 0

    def __enter__(self) -> FifoLock:
        with self._cond:
            ticket, self._next = self._next, self._next + 1
            self._cond.wait_for(lambda: self._serving == ticket)
        return self

    def __exit__(self, *exc) -> None:
        with self._cond:
            self._serving += 1
            self._cond.notify_all()


@dataclass
class _Batch:
    texts: list = field(default_factory=list)
    visuals: list = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    full: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    arrived: list[float] = field(default_factory=list)
    parts: list[Evaluation] | None = None
    error: BaseException | None = None


def _concat(parts: list) -> np.ndarray | None:
    return None if parts[0] is None else np.concatenate(parts)


class Merger:
    """Merges concurrent requests with the same key (see the module's docstring).

    Args:
        wait_s: how long the first request of a batch waits for others (0: no merging).
        max_candidates: a batch with this many candidates runs at once.
        compute: held while a batch (or any other work of the actor) runs: one at a time.
    """

    def __init__(self, wait_s: float, max_candidates: int, compute: FifoLock) -> None:
        self.wait_s, self.max_candidates, self.compute = wait_s, max_candidates, compute
        self._lock = threading.Lock()
        self._open: dict[Hashable, _Batch] = {}
        #: merged forwards run, and the requests they served: merging at work.
        self.batches = self.requests = 0
        #: the latest requests' queueing delays (seconds from arrival to their forward's start,
        #: merging's wait included) and the latest forwards' sizes in requests.
        self.delays: deque[float] = deque(maxlen=RECORDS)
        self.sizes: deque[int] = deque(maxlen=RECORDS)
        self.running: list[int] = []

    def _started(self, arrived: list[float], counts: list[int]) -> None:
        #: the candidates of each request in the forward now running (read it in ``evaluate``)
        self.running = counts
        now = time.perf_counter()
        self.batches, self.requests = self.batches + 1, self.requests + len(arrived)
        self.delays.extend(now - t for t in arrived)
        self.sizes.append(len(arrived))

    def run(self, key: Hashable, text, visual, n: int,
            evaluate: Callable[[object, object], Evaluation]) -> Evaluation:
        """``evaluate(text, visual)`` of ``n`` candidates, possibly in one batch with others."""
        if self.wait_s <= 0:
            arrived = [time.perf_counter()]
            with self.compute:
                self._started(arrived, [n])
                return evaluate(text, visual)
        with self._lock:
            batch = self._open.get(key)
            leader = batch is None
            if leader:
                batch = self._open[key] = _Batch()
            index = len(batch.counts)
            batch.texts.append(text)
            batch.visuals.append(visual)
            batch.counts.append(n)
            batch.arrived.append(time.perf_counter())
            if sum(batch.counts) >= self.max_candidates:
                del self._open[key]  # closed: the next request starts a new batch
                batch.full.set()
        if leader:
            self._lead(key, batch, evaluate)
        else:
            batch.done.wait()
        if batch.error is not None:
            raise batch.error
        return batch.parts[index]

    def _lead(self, key: Hashable, batch: _Batch, evaluate) -> None:
        batch.full.wait(self.wait_s)
        with self._lock:
            if self._open.get(key) is batch:
                del self._open[key]  # closed: later requests start the next batch
        try:
            with self.compute:
                self._started(batch.arrived, batch.counts)
                merged = evaluate(_concat(batch.texts), _concat(batch.visuals))
            batch.parts = split_evaluation(merged, batch.counts)
        except BaseException as exc:  # every request of the batch fails with it
            batch.error = exc
        finally:
            batch.done.set()
