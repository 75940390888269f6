"""A GPU cluster simulated on this machine: is the scheduler, or the GPUs, setting the pace?

    python -m bench.cluster [SPEC] --gpus 8 [--device a10g|h100] [--time-scale 3] [--merge-ms 2]
    python -m bench.cluster --record      # the runs of RECORDED: bench/results/cluster.json

The driver, Ray Tune, the searchers, the trial loop and the oracle pool are the
real code; only the GPUs' arithmetic is simulated (``bench.simulated``: each
forward sleeps the cost model's time, times ``--time-scale``). The plan is a
scaled-down copy of the specification (default ``sweeps/coop16.toml``): its
groups, methods, request sizes, seeds, checkpoints and CoOp split sizes kept;
its settings divided by ``SETTINGS_FACTOR`` and every budget by
``--budget-factor``, so that the requests fit this machine; ``--gpus`` actors
of one simulated GPU each, and ``CONCURRENCY_PER_GPU`` trials a GPU (coop16
runs 8 trials on 4 GPUs). Ray is started with as many logical CPUs as trials
and the GPUs asked for: Ray's dispatch and the trial workers' CPU work are
real and share this machine's cores, which the CPU figures show.

Figures: the lower bound (the simulated device time of every request run on
its own, over the GPUs), the device time actually slept (fewer, merged
forwards), the makespan (first forward's start to last forward's end),
utilisation (device time over GPUs x makespan), queueing delays and merged
batch sizes from the actors (``results/<name>/actors.json``), and this
machine's CPU load and the trial workers' memory, sampled every second; and
the same before and after the last trial started (the tail, when slots go
idle), with utilisation in 10-second steps; and each method's trials: how many, how
long, when the last started and ended.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd

from bench import common

SPEC = Path(__file__).resolve().parent.parent / "sweeps" / "coop16.toml"
#: Settings of each method are divided by this (at least 1 remains).
SETTINGS_FACTOR = 10
#: Every budget is divided by this by default.
BUDGET_FACTOR = 16
#: ... and these methods' by this much more: CBBT's budget is the largest by far (1.9 million
#: evaluations a trial on Caltech101), and each of its 257-candidate requests is real CPU work
#: here (the recorded runs were of cbbt v1, whose requests also returned features for its
#: adapter).
EXTRA_BUDGET_FACTOR = {"cbbt": 8}
#: Trials in flight per simulated GPU (coop16: concurrency 8 on 4 GPUs).
CONCURRENCY_PER_GPU = 2


def scaled_spec(spec, gpus: int, budget_factor: int, merge_ms: float, name: str,
                per_gpu: int = CONCURRENCY_PER_GPU):
    """``spec`` scaled down: settings divided by SETTINGS_FACTOR, the first seed, budgets divided
    by ``budget_factor`` (and EXTRA_BUDGET_FACTOR); ``gpus`` one-GPU actors, ``per_gpu`` trials
    a GPU."""
    def budget(b, method: str):
        factor = budget_factor * EXTRA_BUDGET_FACTOR.get(method, 1)
        if b.published:  # resolved per data set: a share of each
            return dataclasses.replace(b, fraction=b.fraction / factor)
        return dataclasses.replace(b, limit=max(1, b.limit // factor))

    methods = tuple(dataclasses.replace(
        m, samples=max(1, spec.samples_for(m.name) // SETTINGS_FACTOR),
        budget=budget(spec.budget_for(m.name), m.name)) for m in spec.methods)
    resources = dataclasses.replace(
        spec.resources, actors=gpus, gpus_per_actor=1, cpus_per_actor=0,
        concurrency=per_gpu * gpus, merge_wait_ms=merge_ms, actors_per_task=None)
    return dataclasses.replace(spec, name=name, methods=methods, resources=resources,
                               data=dataclasses.replace(spec.data, seeds=spec.data.seeds[:1]))


class CpuSampler:
    """This machine's CPU load and the trial workers' resident memory, every ``every`` s (/proc)."""

    def __init__(self, every: float = 1.0) -> None:
        self.every, self.samples = every, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _cpu() -> tuple[float, float]:
        fields = [float(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    @staticmethod
    def _trial_workers() -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmd = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                if cmd.startswith(b"ray::ImplicitFunc"):
                    pids.append(int(entry.name))
        return pids

    def _run(self) -> None:
        total, idle = self._cpu()
        while not self._stop.wait(self.every):
            t, i = self._cpu()
            busy = 1 - (i - idle) / max(t - total, 1e-9)
            total, idle = t, i
            rss = []
            for pid in self._trial_workers():
                try:
                    rss.append(common.rss_mb(pid)[0])
                except (OSError, KeyError):  # gone, or a zombie (no VmRSS) between two reads
                    pass
            self.samples.append({"t": time.time(), "cpu_busy": busy, "trial_workers": len(rss),
                                 "trial_workers_rss_mb": sum(rss)})

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        if not self.samples:
            return {}
        busy = [s["cpu_busy"] for s in self.samples]
        return {"cores": os.cpu_count(), "cpu_busy_mean": sum(busy) / len(busy),
                "cpu_busy_max": max(busy),
                "trial_workers_max": max(s["trial_workers"] for s in self.samples),
                "trial_workers_rss_mb_max": max(s["trial_workers_rss_mb"] for s in self.samples)}


def simulate(spec_path: Path, gpus: int, device_name: str, time_scale: float, budget_factor: int,
             merge_ms: float, out_root: Path, progress: bool = False,
             per_gpu: int = CONCURRENCY_PER_GPU) -> dict:
    """One simulated sweep; its figures."""
    import ray
    from ray import cloudpickle

    from bench import simulated
    from sweep.spec import load_spec
    from sweep.tuning import ACTOR_REPORT, DEVICES, plan_sweep, run_sweep, start_ray
    from sweep.tuning.cost import plan_cost

    # The actors' processes cannot import bench/ (not installed): send the classes themselves.
    cloudpickle.register_pickle_by_value(simulated)
    device = DEVICES[device_name]
    name = f"cluster-{gpus}gpu-{device_name}-x{time_scale:g}-{per_gpu}pergpu" + (
        f"-merge{merge_ms:g}" if merge_ms else "")
    spec = scaled_spec(load_spec(spec_path, check_paths=False), gpus, budget_factor, merge_ms, name,
                       per_gpu)
    plan = plan_sweep(spec, out_root, resume=False)
    ray.shutdown()
    # Logical resources: a CPU per trial (Tune asks one each) and the simulated GPUs; the
    # launcher's private Ray otherwise (a token of its own).
    start_ray(num_cpus=spec.resources.concurrency + 1, num_gpus=gpus, object_store_memory=1 << 30)
    started = time.time()
    try:
        with CpuSampler() as cpu:
            folder = run_sweep(spec, results_root=out_root, progress=progress,
                               server=simulated.simulated_server(device, time_scale))
    finally:
        ray.shutdown()
    wall = time.time() - started
    actors = json.loads((folder / ACTOR_REPORT).read_text())["actors"]
    busy = sum(a["busy_s"] for a in actors) * time_scale
    unmerged = sum(a["unmerged_s"] for a in actors) * time_scale
    first = min(a["first"] for a in actors if a["first"] is not None)
    last = max(a["last"] for a in actors if a["last"] is not None)
    makespan = last - first
    bound = unmerged / gpus
    delays = [a for a in actors if a.get("queued_requests")]
    return {
        "gpus": gpus, "device": device.name, "time_scale": time_scale, "merge_wait_ms": merge_ms,
        "trials": plan.trials, "concurrency": spec.resources.concurrency,
        "requests": sum(a["requests"] for a in actors),
        "forwards": sum(a["forwards"] for a in actors),
        "evaluations": sum(a["evaluations"] for a in actors),
        "lower_bound_s": bound, "device_s_unmerged": unmerged, "device_s_merged": busy,
        "makespan_s": makespan, "wall_s": wall, "makespan_over_bound": makespan / bound,
        "utilisation": busy / (gpus * makespan),
        "utilisation_of_unmerged_work": unmerged / (gpus * makespan),
        "per_actor_utilisation": [a["busy_s"] * time_scale / makespan for a in actors],
        "queueing_delay_mean_s": sum(a["delay_mean_s"] * a["queued_requests"] for a in delays)
        / max(1, sum(a["queued_requests"] for a in delays)),
        "queueing_delay_p95_s_max": max((a["delay_p95_s"] for a in delays), default=0.0),
        "requests_per_forward_mean": sum(a["requests_per_forward_mean"] for a in delays)
        / max(1, len(delays)),
        "requests_per_forward_max": max((a["requests_per_forward_max"] for a in delays), default=0),
        "cpu": cpu.summary(),
        **_phases(actors, pd.read_parquet(folder / "trials"), cpu.samples, gpus),
        "plan_cost": plan_cost(plan, device).splitlines()[-2:],
    }


def _phases(actors: list[dict], trials, samples: list[dict], gpus: int) -> dict:
    """The run before and after its last trial started (its tail, when trial slots go idle):
    the simulated GPUs' utilisation and this machine's CPU load in each, and utilisation in
    10-second steps."""
    busy: dict[int, float] = {}
    for actor in actors:
        for second, seconds in actor["busy_by_second"].items():
            busy[int(second)] = busy.get(int(second), 0.0) + seconds
    t0, t1 = min(busy), max(busy) + 1
    tail = max(ts.timestamp() for ts in trials["started_at"])

    def utilisation(a: float, b: float) -> float:
        return sum(v for k, v in busy.items() if a <= k < b) / (gpus * max(1.0, b - a))

    def cpu(a: float, b: float) -> float | None:
        load = [x["cpu_busy"] for x in samples if a <= x["t"] < b]
        return sum(load) / len(load) if load else None

    by_method = {}
    for method, rows in trials.groupby("method"):
        started = rows["started_at"].map(lambda ts: ts.timestamp() - t0)
        by_method[method] = {"trials": len(rows), "wall_s_mean": float(rows["wall_s"].mean()),
                             "wall_s_max": float(rows["wall_s"].max()),
                             "started_last_at_s": float(started.max()),
                             "ended_last_at_s": float((started + rows["wall_s"]).max())}
    return {"tail_starts_at_s": tail - t0, "tail_s": t1 - tail, "trials_by_method": by_method,
            "utilisation_before_tail": utilisation(t0, tail), "utilisation_in_tail": utilisation(tail, t1),
            "cpu_busy_before_tail": cpu(t0, tail), "cpu_busy_in_tail": cpu(tail, t1),
            "utilisation_by_10s": [round(utilisation(t, t + 10), 3) for t in range(t0, t1, 10)]}


def _line(r: dict) -> str:
    return (f"{r['gpus']} x {r['device']} (time x{r['time_scale']:g}, {r['concurrency']} trials, "
            f"merge {r['merge_wait_ms']:g} ms): {r['trials']} trials, {r['requests']:,} requests, "
            f"makespan {r['makespan_s']:.0f} s, bound {r['lower_bound_s']:.0f} s "
            f"({r['makespan_over_bound']:.2f}x), utilisation {r['utilisation']:.0%} "
            f"({r['utilisation_before_tail']:.0%} before the last {r['tail_s']:.0f} s), CPU busy "
            f"{r['cpu'].get('cpu_busy_mean', 0):.0%}")


#: The recorded runs: (gpus, device, time scale, trials a GPU). The simulated time is slept 3
#: times over so that this machine's 2 cores, which run every trial's CPU work, keep up with
#: 8 GPUs' requests (at 1x they do not: the first run shows it); H100s also 9 times over, as
#: long as A10Gs' 3 (an H100-class GPU does the same work about 3 times faster); 32 GPUs run
#: 1 trial a GPU, since 64 trial workers (about 0.35 GB each) would not fit in 24 GB.
RECORDED = ((8, "a10g", 1.0, 2), (8, "a10g", 3.0, 2), (8, "h100", 3.0, 2), (8, "h100", 9.0, 2),
            (32, "a10g", 3.0, 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", nargs="?", default=str(SPEC), help="sweep specification to scale down")
    parser.add_argument("--gpus", type=int, default=8, help="simulated GPUs (one actor each)")
    parser.add_argument("--device", choices=("a10g", "h100"), default="a10g")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="simulated device time is slept this many times over")
    parser.add_argument("--budget-factor", type=int, default=BUDGET_FACTOR,
                        help="every budget is divided by this")
    parser.add_argument("--merge-ms", type=float, default=0.0, help="[resources] merge_wait_ms")
    parser.add_argument("--trials-per-gpu", type=int, default=CONCURRENCY_PER_GPU,
                        help="trials in flight per simulated GPU")
    parser.add_argument("--record", action="store_true",
                        help="the recorded runs (8 and 32 GPUs, A10G and H100) to bench/results")
    parser.add_argument("--out", help="result file (default bench/results/cluster.json)")
    parser.add_argument("--results", help="keep each run's results folder here (default: a "
                        "temporary folder, removed)")
    args = parser.parse_args(argv)
    if args.gpus < 1 or args.time_scale <= 0 or args.budget_factor < 1 or args.trials_per_gpu < 1:
        parser.error("--gpus, --budget-factor and --trials-per-gpu must be >= 1 and --time-scale > 0")
    runs = RECORDED if args.record else ((args.gpus, args.device, args.time_scale,
                                          args.trials_per_gpu),)
    rows = []
    with tempfile.TemporaryDirectory(prefix="promptsweep-cluster-") as tmp:
        tmp = args.results or tmp
        for gpus, device, scale, per_gpu in runs:
            print(f"simulating {gpus} x {device} ...", file=sys.stderr, flush=True)
            rows.append(simulate(Path(args.spec), gpus, device, scale, args.budget_factor,
                                 args.merge_ms, Path(tmp), progress=not args.record,
                                 per_gpu=per_gpu))
            print("  " + _line(rows[-1]), file=sys.stderr, flush=True)
    for r in rows:
        print(_line(r))
    if args.record or args.out:
        common.write("cluster", {
            "machine": common.machine(), "spec": str(args.spec), "settings_factor": SETTINGS_FACTOR,
            "seeds": "the first of the specification's",
            "extra_budget_factor": EXTRA_BUDGET_FACTOR,
            "budget_factor": args.budget_factor,
            "cost_model": {"efficiency": _efficiency(), "forward_s": _forward_s(),
                           "dispatch": "real (Ray, this machine)"},
            "runs": rows}, None if args.out is None else Path(args.out))
    return 0


def _efficiency() -> float:
    from sweep.tuning.cost import EFFICIENCY

    return EFFICIENCY


def _forward_s() -> float:
    from bench.simulated import FORWARD_S

    return FORWARD_S


if __name__ == "__main__":
    raise SystemExit(main())
