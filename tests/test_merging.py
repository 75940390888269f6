"""Cross-trial batching: concurrent requests for the same task merge into one forward, exactly."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from sweep.oracle import OracleServer, PromptLayout, ServerBase, TaskKey
from methods.base import Evaluation
from sweep.oracle.merging import DeviceQueue
from sweep.spec import ModelSpec

KEY = TaskKey("digits", None, 4, 1)
TOL = 1e-6


def _server(wait_s: float) -> OracleServer:
    return OracleServer(ModelSpec(), "cpu", 1, None, None, merge_wait_s=wait_s)


@pytest.mark.parametrize("layout", [PromptLayout(n_text=2), PromptLayout(n_text=2, n_visual=2)],
                         ids=["text", "text+visual"])
def test_merged_requests_equal_separate_ones(layout):
    separate, merging = _server(0.0), _server(0.5)
    info = separate.info(KEY, layout)
    rng = np.random.default_rng(0)
    requests = []
    for n in (1, 3, 2, 4):
        text = rng.normal(0, 0.02, (n, *info["text_shape"])).astype(np.float32)
        visual = (rng.normal(0, 0.5, (n, *info["visual_shape"])).astype(np.float32)
                  if layout.n_visual else None)
        requests.append((text, visual))
    merging.info(KEY, layout)
    calls = {"train": lambda s, t, v: s.evaluate(KEY, layout, t, v, True, None),
             "test": lambda s, t, v: s.evaluate_split(KEY, layout, "test", t, v, True)}
    for channel, call in calls.items():
        expected = [call(separate, t, v) for t, v in requests]
        got: list = [None] * len(requests)
        start = threading.Barrier(len(requests))

        def one(i: int) -> None:
            start.wait()  # all at once: they meet in one batch
            got[i] = call(merging, *requests[i])

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(requests))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for a, b in zip(expected, got):
            np.testing.assert_allclose(b.losses, a.losses, atol=TOL)
            np.testing.assert_allclose(b.accuracies, a.accuracies, atol=TOL)
            np.testing.assert_allclose(b.text_features, a.text_features, atol=TOL)
            np.testing.assert_allclose(b.image_features, a.image_features, atol=TOL)
            np.testing.assert_array_equal(b.labels, a.labels)
    memory = merging.memory()
    # 8 evaluations in far fewer forwards: they did merge (one batch per channel, unless a
    # thread came late).
    assert memory["evaluations"] == 8 and memory["forwards"] <= 4


def test_without_merging_every_request_is_its_own_forward():
    server = _server(0.0)
    text = np.zeros((1, *server.info(KEY, PromptLayout(n_text=2))["text_shape"]), np.float32)
    for _ in range(3):
        server.evaluate(KEY, PromptLayout(n_text=2), text, None, False, None)
    assert server.memory()["forwards"] == server.memory()["evaluations"] == 3


# ---------------------------------------------------------------- what an actor tells the pool


class _Holding(ServerBase):
    """An actor body whose ``hold`` waits for an event: a request that is still running."""

    def hold(self, event: threading.Event) -> str:
        event.wait(10)
        return "held"

    def quick(self) -> str:
        return "quick"


def test_an_actor_reports_the_work_still_outstanding_with_each_reply():
    server, release = _Holding(), threading.Event()
    held: list = []
    worker = threading.Thread(target=lambda: held.append(server.serve("hold", 100, release)))
    worker.start()
    while server._pending < 100:  # the held request has been taken
        threading.Event().wait(0.01)
    assert server.serve("quick", 5) == ("quick", 100)  # the held request's work remains
    release.set()
    worker.join()
    assert held == [("held", 0)] and server.requests == 2


def _busy(queue: DeviceQueue, release: threading.Event) -> threading.Thread:
    """A thread whose call holds the device until ``release``; returned once it runs."""
    running = threading.Event()
    busy = threading.Thread(target=queue.call, args=(lambda: (running.set(), release.wait(10)),))
    busy.start()
    running.wait(10)
    return busy


def test_requests_queue_for_the_device_in_arrival_order():
    queue, order, release = DeviceQueue(0.0, 256), [], threading.Event()
    busy = _busy(queue, release)  # the device is busy: every request below waits
    threads = []
    for i in range(6):
        threads.append(threading.Thread(target=queue.call, args=(lambda i=i: order.append(i),)))
        threads[-1].start()
        while queue.waiting < i + 1:  # request i waits in line before the next one comes
            threading.Event().wait(0.005)
    release.set()
    for t in (busy, *threads):
        t.join()
    assert order == list(range(6))


def test_a_batch_does_not_wait_to_merge_while_other_work_is_queued():
    """The bounded wait idles the device only when nothing else is queued."""
    queue, release, ran = DeviceQueue(30.0, 256), threading.Event(), []

    def evaluate(text, visual):
        ran.append(len(text))
        return Evaluation(losses=np.zeros(len(text)))

    busy = _busy(queue, release)
    one = threading.Thread(target=queue.run, args=("a", np.zeros((2, 1)), None, 2, evaluate))
    one.start()
    while queue.waiting < 1:
        threading.Event().wait(0.005)
    other = threading.Thread(target=queue.call, args=(lambda: ran.append("other"),))
    other.start()
    while queue.waiting < 2:
        threading.Event().wait(0.005)
    release.set()
    for t in (busy, one, other):
        t.join(timeout=5)  # a 30 s wait for partners would leave them running
    assert ran == [2, "other"] and queue.batches == 1


def test_higher_priorities_go_first_and_equal_ones_in_arrival_order():
    queue, order, release = DeviceQueue(0.0, 256), [], threading.Event()
    busy = _busy(queue, release)
    threads = []
    for i, priority in enumerate((0, 5, 0, 5, 9)):
        def call(i=i, priority=priority):
            with queue.priority(priority):
                queue.call(lambda: order.append(i))

        threads.append(threading.Thread(target=call))
        threads[-1].start()
        while queue.waiting < i + 1:
            threading.Event().wait(0.005)
    release.set()
    for t in (busy, *threads):
        t.join()
    assert order == [4, 1, 3, 0, 2]
