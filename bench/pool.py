"""Throughput of the Ray oracle pool with one and two actors, and its dispatch overhead.

    python -m bench.pool
    python -m bench.pool --merge      # cross-trial batching: 8 trials' small requests, one actor

Compute-bound batch: ViT-B-32 (random weights), text-only prompts (8 context
tokens), population 30, on the embedded digits task (16 shots x 10 classes).
Each actor holds one core here, as each holds one GPU on a cluster: one actor
with one thread is compared with two actors with one thread each (and, for
reference, one actor with two threads). A trial's batch is split across the
actors (``OraclePool.map_candidates``).

Dispatch overhead: the same request on the embedded tiny model through a pool of
one actor and on a local oracle in this process, both with one thread; the
difference per request is what the pool costs. Figures go to
``bench/results/pool.json``.

``--merge``: 8 concurrent clients (Ray actors, a process each as trials are,
each with its own oracle of one task, as concurrent trials of one group have)
send requests to one actor of the embedded model, first with merging off,
then on (``merge_wait_ms`` 1 and 5): small text-only requests of 1-4
candidates (the regime of a GPU, where dispatch outweighs compute), and
populations of 30. Once with the actor's arithmetic on this CPU, where compute
grows with the candidates; then with it simulated (``bench.simulated``: the
cost model's time for the embedded model on an A10G- and an H100-class GPU,
slept, on a task of 10 classes as the digits have): the GPU regime, with Ray's
dispatch real. Then all of it again with 8 threads of one process calling an
actor's body directly, as Ray's threads in an actor do: the actor's queueing
and merging without Ray's dispatch, which caps the first runs on this
machine's 2 cores. Figures go to ``bench/results/merge.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from bench import common

POP, BATCHES = 30, 6


def _prompts(width: int, pop: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.02, size=(pop, 8, width)).astype(np.float32)


def _per_batch(oracle, batches: list[np.ndarray]) -> tuple[float, list[float]]:
    """Median seconds per batch after one untimed warm-up batch (which fills the caches)."""
    oracle.evaluate(text=batches[0])
    times, losses = [], []
    for text in batches:
        t0 = time.perf_counter()
        ev = oracle.evaluate(text=text)
        times.append(time.perf_counter() - t0)
        losses.extend(ev.losses.tolist())
    return statistics.median(times), losses


def throughput(model: str, actors: int, threads: int, key, layout) -> dict:
    import ray

    from sweep.oracle import OraclePool
    from sweep.spec import ModelSpec

    pool = OraclePool(ModelSpec(name=model), actors, threads_per_actor=threads)
    try:
        oracle = pool.oracle(key, layout)
        width = oracle.text_shape[-1]
        batches = [_prompts(width, POP, seed) for seed in range(BATCHES)]
        seconds, losses = _per_batch(oracle, batches)
        memory = [common.rss_mb(pid)[1] for pid in ray.get([a.pid.remote() for a in pool.actors])]
    finally:
        pool.shutdown()
    return {"model": model, "actors": actors, "threads_per_actor": threads, "candidates": POP,
            "seconds_per_batch": seconds, "candidates_per_s": POP / seconds,
            "actor_peak_rss_mb": memory, "losses": losses}


def dispatch_overhead(key, layout, pop: int, requests: int = 60) -> dict:
    import torch

    from sweep.data import few_shot, load_dataset
    from sweep.oracle import ClipOracle, OraclePool, load_model
    from sweep.spec import EMBEDDED_MODEL, ModelSpec

    torch.set_num_threads(1)
    spec = ModelSpec(name=EMBEDDED_MODEL)
    task = few_shot(load_dataset(key.dataset, key.data_root), key.shots, key.seed)
    local = ClipOracle(load_model(spec, "cpu"), task, layout)
    pool = OraclePool(spec, 1, threads_per_actor=1)
    try:
        pooled = pool.oracle(key, layout)
        batches = [_prompts(local.text_shape[-1], pop, seed) for seed in range(requests)]
        local_s, local_losses = _per_batch(local, batches)
        pooled_s, pooled_losses = _per_batch(pooled, batches)
    finally:
        pool.shutdown()
    return {"model": EMBEDDED_MODEL, "candidates": pop, "requests": requests,
            "local_ms": local_s * 1e3, "pooled_ms": pooled_s * 1e3,
            "overhead_ms": (pooled_s - local_s) * 1e3,
            "max_loss_difference": float(np.max(np.abs(np.subtract(local_losses, pooled_losses))))}


MERGE_CLIENTS, MERGE_REQUESTS = 8, 150
#: Merging's bounded waits measured (ms), beside merging off (0).
MERGE_WAITS_MS = (0.0, 1.0, 5.0)


class MergeClient:
    """A trial's stand-in (the body of a Ray actor, a process of its own): one oracle of the
    pool, requests sent one after another."""

    def __init__(self, pool, key, layout) -> None:
        self.oracle = pool.oracle(key, layout)
        self.oracle.evaluate(text=_prompts(self.oracle.text_shape[-1], 1, 0))  # caches

    def run(self, sizes: list[int], seed: int) -> tuple[float, float]:
        width = self.oracle.text_shape[-1]
        batches = [_prompts(width, sizes[(seed + r) % len(sizes)], 1000 * seed + r)
                   for r in range(MERGE_REQUESTS)]
        t0 = time.time()
        for text in batches:
            self.oracle.evaluate(text=text)
        return t0, time.time()

    def run_empty(self) -> tuple[float, float]:
        """As many requests that do nothing (``pid``), through the same pool: dispatch alone."""
        t0 = time.time()
        for _ in range(MERGE_REQUESTS):
            self.oracle.pool.submit(0, "pid", 0)
        return t0, time.time()


def _server_and_task(device: str | None):
    """The actor's class and the clients' task: the embedded model on this CPU, or (``device``)
    a simulated GPU of that kind (``bench.simulated``) holding it."""
    from sweep.oracle import OracleServer, TaskKey

    if device is None:
        return OracleServer, TaskKey("digits", None, 16, 1)
    # the simulator knows CoOp's data sets: EuroSAT has the digits' 10 classes
    from bench import simulated
    from sweep.tuning import DEVICES

    return simulated.simulated_server(DEVICES[device]), TaskKey("EuroSAT", None, 16, 1)


def merged_throughput(wait_ms: float, sizes: list[int], device: str | None = None) -> dict:
    """Requests per second of MERGE_CLIENTS client processes sending requests of ``sizes``
    candidates to one actor (``_server_and_task``)."""
    import ray

    from sweep.oracle import OraclePool, PromptLayout
    from sweep.spec import ModelSpec

    server, key = _server_and_task(device)
    pool = OraclePool(ModelSpec(), 1, threads_per_actor=1, merge_wait_s=wait_ms / 1000,
                      server=server)
    try:
        layout = PromptLayout(n_text=8)
        client = ray.remote(num_cpus=0)(MergeClient)
        clients = [client.remote(pool, key, layout) for _ in range(MERGE_CLIENTS)]
        before = ray.get(pool.actors[0].memory.remote())["forwards"]
        spans = ray.get([c.run.remote(sizes, i) for i, c in enumerate(clients)])
        seconds = max(end for _, end in spans) - min(start for start, _ in spans)
        forwards = ray.get(pool.actors[0].memory.remote())["forwards"] - before
        empty = ray.get([c.run_empty.remote() for c in clients])
        empty_s = max(end for _, end in empty) - min(start for start, _ in empty)
        for c in clients:
            ray.kill(c)
    finally:
        pool.shutdown()
    requests = MERGE_CLIENTS * MERGE_REQUESTS
    return {"merge_wait_ms": wait_ms, "candidates_per_request": sizes, "requests": requests,
            "arithmetic": _arithmetic(device),
            "requests_per_s": requests / seconds,
            # the same clients' requests that do nothing: what Ray's dispatch alone allows here
            "empty_requests_per_s": requests / empty_s,
            "candidates_per_s": requests * statistics.mean(sizes) / seconds,
            "forwards": forwards, "requests_per_forward": requests / forwards}


def in_actor_throughput(wait_ms: float, sizes: list[int], device: str | None = None) -> dict:
    """The same requests as ``merged_throughput``'s, sent by MERGE_CLIENTS threads of this
    process straight to an actor's body (``serve``, as Ray's threads in an actor call it): the
    actor's queueing and merging without Ray's dispatch, which on this machine is the limit."""
    import threading

    from sweep.oracle import PromptLayout
    from sweep.spec import ModelSpec

    server_class, key = _server_and_task(device)
    server = server_class(ModelSpec(), "cpu", 1, merge_wait_s=wait_ms / 1000)
    layout = PromptLayout(n_text=8)
    width = server.serve("info", 0, key, layout)[0]["text_shape"][-1]
    server.serve("evaluate", 1, key, layout, _prompts(width, 1, 0), None, False, None)  # caches
    batches = [[_prompts(width, sizes[(c + r) % len(sizes)], 1000 * c + r)
                for r in range(MERGE_REQUESTS)] for c in range(MERGE_CLIENTS)]
    before = server.memory()["forwards"]

    def client(texts: list[np.ndarray]) -> None:
        for text in texts:
            server.serve("evaluate", len(text), key, layout, text, None, False, None)

    threads = [threading.Thread(target=client, args=(texts,)) for texts in batches]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    forwards = server.memory()["forwards"] - before
    requests = MERGE_CLIENTS * MERGE_REQUESTS
    return {"merge_wait_ms": wait_ms, "candidates_per_request": sizes, "requests": requests,
            "arithmetic": _arithmetic(device), "through": "threads of the actor's process",
            "requests_per_s": requests / seconds, "forwards": forwards,
            "requests_per_forward": requests / forwards}


#: Where the actor's arithmetic runs: this CPU, then simulated GPUs of these kinds.
MERGE_ARITHMETIC = (None, "a10g", "h100")


def _arithmetic(device: str | None) -> str:
    return "this CPU" if device is None else f"simulated {device}"


def merge(out: str | None) -> int:
    from ray import cloudpickle

    from bench import simulated
    from sweep.tuning import start_ray

    start_ray()
    # The clients' and actors' processes cannot import bench/ (not installed): send the
    # classes themselves.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cloudpickle.register_pickle_by_value(simulated)
    rows, summary = [], {}
    for through, measure in (("ray", merged_throughput), ("in_actor", in_actor_throughput)):
        for device in MERGE_ARITHMETIC:
            where = _arithmetic(device)
            for sizes in ([1, 2, 3, 4], [POP]):
                runs = []
                for wait in MERGE_WAITS_MS:
                    print(f"{through}, {where}: {MERGE_CLIENTS} clients, {sizes} candidates, "
                          f"merge_wait_ms {wait} ...", file=sys.stderr, flush=True)
                    runs.append(measure(wait, sizes, device))
                    print(f"  {runs[-1]['requests_per_s']:.0f} requests/s, "
                          f"{runs[-1]['requests_per_forward']:.1f} requests a forward",
                          file=sys.stderr)
                rows.extend(runs)
                kind = "small_requests" if len(sizes) > 1 else f"population_{POP}"
                name = f"{through}_{kind}" + ("" if device is None else f"_simulated_{device}")
                for run in runs[1:]:  # merged over not, per wait
                    summary[f"{name}_merged_{run['merge_wait_ms']:g}ms_vs_not"] = \
                        run["requests_per_s"] / runs[0]["requests_per_s"]
    print(json.dumps(summary, indent=1), file=sys.stderr)
    common.write("merge", {"machine": common.machine(), "clients": MERGE_CLIENTS,
                           "model": "promptsweep-tiny", "summary": summary, "runs": rows},
                 None if out is None else Path(out))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pool", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ViT-B-32", help="open_clip model name (random weights)")
    parser.add_argument("--merge", action="store_true", help="cross-trial batching instead")
    parser.add_argument("--out", help="result file (default bench/results/pool.json or merge.json)")
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.out)

    import ray

    from sweep.oracle import PromptLayout, TaskKey
    from sweep.tuning import start_ray

    start_ray()
    key, layout = TaskKey("digits", None, 16, 0), PromptLayout(n_text=8)
    rows = []
    try:
        for actors, threads in ((1, 1), (2, 1), (1, 2)):
            print(f"pool of {actors} actor(s) x {threads} thread(s) ...", file=sys.stderr, flush=True)
            rows.append(throughput(args.model, actors, threads, key, layout))
        print("dispatch overhead ...", file=sys.stderr, flush=True)
        overhead = [dispatch_overhead(key, layout, pop) for pop in (1, 30)]
    finally:
        ray.shutdown()
    one, two = rows[0], rows[1]
    summary = {
        "two_vs_one_actor": two["candidates_per_s"] / one["candidates_per_s"],
        "one_actor_two_threads_vs_one_thread": rows[2]["candidates_per_s"] / one["candidates_per_s"],
        "same_losses": max(abs(a - b) for a, b in zip(one["losses"], two["losses"])) <= 1e-5,
        "overhead_ms_per_request": {str(o["candidates"]): o["overhead_ms"] for o in overhead},
    }
    for r in rows:
        print(f"{r['actors']} actor(s) x {r['threads_per_actor']} thread(s): "
              f"{r['candidates_per_s']:.2f} candidates/s ({r['seconds_per_batch']:.2f} s per batch of {POP})")
    for o in overhead:
        print(f"dispatch, {o['candidates']} candidate(s), tiny model: local {o['local_ms']:.1f} ms, "
              f"pooled {o['pooled_ms']:.1f} ms, overhead {o['overhead_ms']:.1f} ms per request")
    print(f"two actors / one actor: {summary['two_vs_one_actor']:.2f}x")
    for r in rows:
        r["losses"] = r["losses"][:POP]
    common.write("pool", {"machine": common.machine(), "summary": summary, "throughput": rows,
                          "dispatch": overhead},
                 None if args.out is None else Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
