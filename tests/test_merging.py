"""Cross-trial batching: concurrent requests for the same task merge into one forward, exactly."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from sweep.oracle import OracleServer, PromptLayout, ServerBase, TaskKey
from sweep.oracle.merging import FifoLock
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


def test_requests_queue_for_the_device_in_arrival_order():
    lock, order = FifoLock(), []
    lock.__enter__()  # the device is busy: every thread below waits
    threads = []
    for i in range(6):
        threads.append(threading.Thread(target=lambda i=i: (lock.__enter__(), order.append(i),
                                                            lock.__exit__())))
        threads[-1].start()
        while lock._next < i + 2:  # thread i holds its ticket before the next one starts
            threading.Event().wait(0.005)
    lock.__exit__()
    for t in threads:
        t.join()
    assert order == list(range(6))
