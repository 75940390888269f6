"""Where the oracle actors run: the GPUs they ask for, checked against the cluster first.

``SweepSpec.actor_gpus`` says how many GPUs each actor asks for (a rule on
the specification alone). ``check_gpus`` asks Ray what the cluster holds and
whether an autoscaler may add nodes, and refuses at once, with one line
naming the key to set, a request that can never be met: a Ray no autoscaler
serves (the launcher's private local Ray, or a cluster started by hand)
whose largest node holds fewer GPUs than one actor asks for. Where an
autoscaler serves the cluster, its GPU nodes may start on demand
(``clusters/gpu.yaml``'s GPU workers start at none), so the launch waits for
them up to ``[resources] placement_timeout_s`` and says so on its first line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sweep.errors import ConfigError

__all__ = ["Capacity", "autoscaling", "capacity", "check_gpus"]


@dataclass(frozen=True)
class Capacity:
    """What a Ray cluster holds now, and whether it can grow."""

    gpus: float
    #: the most GPUs one node holds.
    largest_node: float
    #: an autoscaler may add nodes (None: Ray did not say).
    grows: bool | None
    #: how messages name the cluster ("this machine's local Ray", "the Ray cluster at ...").
    name: str


def autoscaling() -> bool | None:
    """Whether an autoscaler may add nodes to the cluster this process joined (None: unknown).

    Ray has no public call for this; read what its autoscalers write to the GCS
    (private, hence guarded). Autoscaler v2 sets a flag. Autoscaler v1's monitor
    writes a status in which a cluster started by hand (``ray start``, no cluster
    config) has only the mirror node types named after its nodes
    (``format_readonly_node_type``); a cluster launcher's has its own types.
    """
    try:
        from ray._private import ray_constants
        from ray.autoscaler._private.util import format_readonly_node_type
        from ray.autoscaler.v2.utils import is_autoscaler_v2
        from ray.experimental.internal_kv import _internal_kv_get

        if is_autoscaler_v2(fetch_from_server=True):
            return True
        status = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
        if not status:
            return False  # no monitor at all
        report = json.loads(status).get("autoscaler_report") or {}
        mapping = report.get("node_type_mapping") or {}
        return any(kind != format_readonly_node_type(node) for node, kind in mapping.items())
    except Exception:  # noqa: BLE001 - a private API moved: say "unknown", and wait
        return None


def capacity(started_here: bool, address: str | None = None) -> Capacity:
    """The cluster Ray is connected to; ``started_here``: the launcher started it, so that no
    autoscaler serves it."""
    import ray

    gpus = [float(n["Resources"].get("GPU", 0)) for n in ray.nodes() if n.get("Alive")]
    name = ("this machine's local Ray" if started_here or not address
            else f"the Ray cluster at {address}")
    return Capacity(sum(gpus), max(gpus, default=0.0), False if started_here else autoscaling(),
                    name)


def check_gpus(gpus_per_actor: float, actors: int, cluster: Capacity, source: str) -> str:
    """Refuse a GPU request ``cluster`` can never meet; else the launch line's note on placement.

    Args:
        gpus_per_actor: what each actor asks for (``SweepSpec.actor_gpus``).
        actors: how many actors.
        cluster: what the cluster holds (``capacity``).
        source: where ``gpus_per_actor`` comes from (``SweepSpec.actor_gpus_source``).

    Raises:
        ConfigError: no node can hold one actor and no autoscaler can add one.
    """
    each = f"{gpus_per_actor:g} GPU{'s' if gpus_per_actor != 1 else ''}"
    asked = f"{actors} oracle actor{'s' if actors != 1 else ''} of {each} each ({source})"
    if gpus_per_actor <= 0:
        return f"{asked}: on CPUs"
    fits = cluster.largest_node >= gpus_per_actor
    if not fits and cluster.grows is False:
        has = (f"{cluster.gpus:g} GPUs" if cluster.gpus == cluster.largest_node
               else f"{cluster.gpus:g} GPUs, at most {cluster.largest_node:g} on one node")
        raise ConfigError(
            f"{asked}, but {cluster.name} has {has} and no autoscaler to add any; set "
            "[resources] gpus_per_actor = 0 to run the actors on CPUs, or join a cluster with "
            "GPUs (--address)")
    if not fits:
        why = ("an autoscaler may start GPU nodes" if cluster.grows
               else "Ray does not say whether an autoscaler may start some")
        return (f"{asked}: {cluster.name} has {cluster.gpus:g} GPUs now; {why}; waiting up to "
                "[resources] placement_timeout_s for them")
    return f"{asked}: {cluster.name} has {cluster.gpus:g} GPUs"
