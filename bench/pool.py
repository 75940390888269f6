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

``--merge``: 8 concurrent clients (threads of this process, each with its own
oracle of one task, as concurrent trials of one group have) send requests to
one actor of the embedded model, first with merging off, then on
(``merge_wait_ms``): small text-only requests of 1-4 candidates (the regime
of a GPU, where dispatch outweighs compute), and populations of 30. Figures
go to ``bench/results/merge.json``.
"""

from __future__ import annotations

import argparse
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


MERGE_CLIENTS, MERGE_REQUESTS, MERGE_WAIT_MS = 8, 150, 5.0


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


def merged_throughput(wait_ms: float, sizes: list[int]) -> dict:
    """Requests per second of MERGE_CLIENTS client processes sending requests of ``sizes``
    candidates to one actor."""
    import ray

    from sweep.oracle import OraclePool, PromptLayout, TaskKey
    from sweep.spec import ModelSpec

    pool = OraclePool(ModelSpec(), 1, threads_per_actor=1, merge_wait_s=wait_ms / 1000)
    try:
        key, layout = TaskKey("digits", None, 16, 1), PromptLayout(n_text=8)
        client = ray.remote(num_cpus=0)(MergeClient)
        clients = [client.remote(pool, key, layout) for _ in range(MERGE_CLIENTS)]
        before = ray.get(pool.actors[0].memory.remote())["forwards"]
        spans = ray.get([c.run.remote(sizes, i) for i, c in enumerate(clients)])
        seconds = max(end for _, end in spans) - min(start for start, _ in spans)
        forwards = ray.get(pool.actors[0].memory.remote())["forwards"] - before
        for c in clients:
            ray.kill(c)
    finally:
        pool.shutdown()
    requests = MERGE_CLIENTS * MERGE_REQUESTS
    return {"merge_wait_ms": wait_ms, "candidates_per_request": sizes, "requests": requests,
            "requests_per_s": requests / seconds,
            "candidates_per_s": requests * statistics.mean(sizes) / seconds,
            "forwards": forwards, "requests_per_forward": requests / forwards}


def merge(out: str | None) -> int:
    from ray import cloudpickle

    from sweep.tuning import start_ray

    start_ray()
    # The clients' processes cannot import bench/ (not installed): send the class itself.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    rows = []
    for sizes in ([1, 2, 3, 4], [POP]):
        for wait in (0.0, MERGE_WAIT_MS):
            print(f"{MERGE_CLIENTS} clients, {sizes} candidates, merge_wait_ms {wait} ...",
                  file=sys.stderr, flush=True)
            rows.append(merged_throughput(wait, sizes))
            print(f"  {rows[-1]['requests_per_s']:.0f} requests/s, "
                  f"{rows[-1]['requests_per_forward']:.1f} requests a forward", file=sys.stderr)
    small_off, small_on, pop_off, pop_on = rows
    summary = {"small_requests_merged_vs_not": small_on["requests_per_s"] / small_off["requests_per_s"],
               "population_30_merged_vs_not": pop_on["requests_per_s"] / pop_off["requests_per_s"]}
    print(summary, file=sys.stderr)
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
