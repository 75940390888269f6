"""An oracle actor's device: one thread computes, requests queue for it, and may merge.

An oracle actor serves several trials at once (a threaded Ray actor): Ray runs
each request in a thread of its own, which hands its computation to the actor's
one device thread (``DeviceQueue``) and waits. The device thread runs the queue
by priority, then in arrival order: the driver gives the trials with the
longest chains of requests the highest (``sweep.tuning.driver``), so that the
trial that would end last does not wait its turn behind every other at every
request. One thread computing, rather than each request's thread in
turn under a lock, keeps torch's per-thread state on one thread (a GPU's
current stream, the CPU's per-thread buffers) and wakes one thread per
request. Measured on this CPU (noisy runs, the embedded model, 1-4
candidates): 8 threads computing in turn under a lock served 250-285
requests a second against 300-440 for one thread alone; 8 clients of one
compute thread were served about as fast as one client (265-300 against
270-305).

Merging (``wait_s`` > 0): requests that ask the same of the same oracle (one
task, layout, channel, split, mini-batch and feature flag) differ only in their
candidates, so they can be one batch. When the device takes a request, it takes
every queued request with the same key along (up to ``max_candidates``); if
nothing else is queued, it waits for more until ``wait_s`` after the first one
arrived (the bounded wait), so the device never idles for merging while other
work waits. The batch runs as one request and each request gets its own rows.
On a GPU, where dispatching a request costs more than computing a few
candidates, this turns many small forwards into one.

A batch evaluates each candidate as a request of its own would, to float
rounding: the oracle's batched evaluation equals the one-at-a-time one to 1e-5
in fp32, and which requests meet in a batch depends on timing. So merging
changes results in the last bits and is off (``wait_s`` = 0) unless asked for;
off, every request is a forward of its own, as before, and tables repeat bit
for bit.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from methods.base import Evaluation

__all__ = ["DeviceQueue", "split_evaluation"]

#: Queueing delays and batch sizes a device queue keeps (the latest ones).
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


@dataclass
class _Job:
    """One request's work: an evaluation (``evaluation``: it may merge, by ``key``) or a call."""

    fn: Callable
    #: (-priority, arrival number): the queue's order
    order: tuple[float, int] = (0.0, 0)
    evaluation: bool = False
    key: Hashable = None
    text: Any = None
    visual: Any = None
    n: int = 0
    arrived: float = field(default_factory=time.perf_counter)
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


def _concat(parts: list) -> np.ndarray | None:
    return None if parts[0] is None else np.concatenate(parts)


class DeviceQueue:
    """The actor's device thread and the queue of work for it (see the module's docstring).

    Args:
        wait_s: how long the first request of a batch may wait for others (0: no merging).
        max_candidates: a batch with this many candidates runs at once.
    """

    def __init__(self, wait_s: float, max_candidates: int) -> None:
        self.wait_s, self.max_candidates = wait_s, max_candidates
        self._cond = threading.Condition(threading.Lock())
        self._jobs: list[_Job] = []  # sorted by ``order``
        self._arrivals = itertools.count()
        self._local = threading.local()  # the priority of the request this thread serves
        #: forwards run, and the evaluations they served: merging at work.
        self.batches = self.requests = 0
        #: the latest evaluations' queueing delays (seconds from arrival to their forward's
        #: start, merging's wait included) and the latest forwards' sizes in requests.
        self.delays: deque[float] = deque(maxlen=RECORDS)
        self.sizes: deque[int] = deque(maxlen=RECORDS)
        #: the candidates of each request in the forward now running (read it in ``evaluate``)
        self.running: list[int] = []
        self._thread = threading.Thread(target=self._loop, name="device", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        """Requests queued for the device (the one running not included)."""
        return len(self._jobs)

    @contextlib.contextmanager
    def priority(self, priority: float) -> Iterator[None]:
        """Work this thread submits meanwhile goes before queued work of lower priority."""
        self._local.priority = priority
        try:
            yield
        finally:
            self._local.priority = 0.0

    def call(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` on the device thread, in turn (priority, then arrival), never merged."""
        return self._submit(_Job(fn))

    def run(self, key: Hashable, text, visual, n: int,
            evaluate: Callable[[object, object], Evaluation]) -> Evaluation:
        """``evaluate(text, visual)`` of ``n`` candidates, possibly in one batch with others of
        the same ``key``."""
        return self._submit(_Job(evaluate, evaluation=True, key=key, text=text, visual=visual, n=n))

    def _submit(self, job: _Job) -> Any:
        if threading.current_thread() is self._thread:  # work the device is doing asks for more
            self._execute([job])
        else:
            with self._cond:
                job.order = (-getattr(self._local, "priority", 0.0), next(self._arrivals))
                bisect.insort(self._jobs, job, key=lambda j: j.order)
                self._cond.notify()
            job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._jobs:
                    self._cond.wait()
                batch = [self._jobs.pop(0)]
                if batch[0].evaluation and self.wait_s > 0:
                    self._gather(batch)
            self._execute(batch)

    def _gather(self, batch: list[_Job]) -> None:
        """Move the queued requests of ``batch[0]``'s key into ``batch``, waiting for more while
        nothing else is queued, until its bounded wait is over or it is full (``_cond`` held)."""
        head = batch[0]
        deadline, total = head.arrived + self.wait_s, head.n
        while True:
            kept: list[_Job] = []
            for job in self._jobs:
                if job.evaluation and job.key == head.key and total < self.max_candidates:
                    batch.append(job)
                    total += job.n
                else:
                    kept.append(job)
            self._jobs = kept
            left = deadline - time.perf_counter()
            if total >= self.max_candidates or self._jobs or left <= 0:
                return
            self._cond.wait(left)

    def _execute(self, batch: list[_Job]) -> None:
        head = batch[0]
        try:
            if not head.evaluation:
                head.result = head.fn()
                return
            counts = [job.n for job in batch]
            self._started([job.arrived for job in batch], counts)
            if len(batch) == 1:
                head.result = head.fn(head.text, head.visual)
            else:  # the requests differ only in their candidates: any one's evaluate serves all
                merged = head.fn(_concat([job.text for job in batch]),
                                 _concat([job.visual for job in batch]))
                for job, part in zip(batch, split_evaluation(merged, counts)):
                    job.result = part
        except BaseException as exc:  # every request of the batch fails with it
            for job in batch:
                job.error = exc
        finally:
            for job in batch:
                job.done.set()

    def _started(self, arrived: list[float], counts: list[int]) -> None:
        self.running = counts
        now = time.perf_counter()
        self.batches, self.requests = self.batches + 1, self.requests + len(arrived)
        self.delays.extend(now - t for t in arrived)
        self.sizes.append(len(arrived))
