"""A sweep on a Ray cluster of three nodes on this machine whose GPU node is lost mid-sweep.

Run by ``tests/test_node_loss.py`` in a process of its own (the test session has its own Ray):

    python tests/node_loss.py RESULTS_ROOT

A head node without GPUs (the driver, the trials), as ``clusters/gpu.yaml``'s, and a node of
2 simulated GPUs holding the 2 oracle actors (``bench.simulated``: no model, deterministic
synthetic losses), which ask for a GPU each by the default for a model other than the
embedded one (no ``gpus_per_actor`` in the specification). When the first trial
has checkpointed, the GPU node is removed without warning and another one joins: Ray
restarts the actors there and resubmits the requests they held. Prints one JSON line: the
results folder, and the GPU node's id before and after.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench/ is not installed

SPEC = """
name = "node-loss"
[data]
datasets = ["Caltech101"]
root = "/nonexistent"
shots = [16]
seeds = [1, 2]
[budget]
unit = "candidate_evals"
limit = 400
checkpoints = 8
[search]
methods = ["bbt"]
samples = 2
[methods.bbt]
params = { popsize = 10, intrinsic_dim_text = 20 }
[resources]
concurrency = 2
actors = 2
placement_timeout_s = 120
"""


def main(root: str) -> int:
    import threading

    import ray
    from ray import cloudpickle
    from ray.cluster_utils import Cluster

    from bench import simulated
    from sweep.oracle import EMBEDDED_CONFIG
    from sweep.spec import ModelSpec, parse_spec
    from sweep.tuning import DEVICES, run_sweep
    from sweep.tuning.auth import private_token

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    private_token()  # RAY_AUTH_MODE=token, a token of this cluster's own, as start_ray's
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 3, "num_gpus": 0, "include_dashboard": False, "object_store_memory": 256 << 20,
        # A lost node is found in about 5 s instead of Ray's default 15-30 s.
        "_system_config": {"health_check_initial_delay_ms": 1000, "health_check_period_ms": 1000,
                           "health_check_timeout_ms": 1000, "health_check_failure_threshold": 5}})
    gpu_node = cluster.add_node(num_cpus=0, num_gpus=2, object_store_memory=256 << 20)
    ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
    cloudpickle.register_pickle_by_value(simulated)
    # A GPU forward of bench.simulated's cost model, slept 20 times over: time to lose the node.
    server = simulated.simulated_server(DEVICES["a10g"], time_scale=20.0)
    # A model other than the embedded one, with the embedded one's architecture (the cost
    # model's time): its actors get a GPU each by default (SweepSpec.actor_gpus).
    config = Path(root) / "tiny-real.json"
    config.write_text(EMBEDDED_CONFIG.read_text())
    spec = dataclasses.replace(parse_spec(SPEC, "node-loss.toml", check_paths=False),
                               model=ModelSpec(name="tiny-real", config=str(config)))
    lost, outcome = {}, {}

    def sweep() -> None:  # in a thread: Ray adds nodes from the main thread only
        try:
            outcome["folder"] = run_sweep(spec, results_root=root, progress=False, server=server)
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome["error"] = exc

    runner = threading.Thread(target=sweep)
    runner.start()
    try:
        folder = Path(root) / spec.name / "checkpoints"
        while runner.is_alive() and not list(folder.glob("*.pkl")):
            time.sleep(0.05)
        if runner.is_alive():  # a trial has checkpointed: the GPU node goes, another comes
            lost["removed"] = gpu_node.node_id
            cluster.remove_node(gpu_node, allow_graceful=False)
            lost["added"] = cluster.add_node(num_cpus=0, num_gpus=2,
                                             object_store_memory=256 << 20).node_id
        runner.join()
    finally:
        ray.shutdown()
        cluster.shutdown()
    if "error" in outcome:
        raise outcome["error"]
    folder = outcome["folder"]
    print(json.dumps({"folder": str(folder), **lost}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
