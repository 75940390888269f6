"""The oracle pool: Ray actors that each hold a CLIP on their device, shared by all trials.

``OraclePool`` starts the actors once per sweep (in the driver). A trial gets
a ``PooledOracle``: the same interface as a local ``ClipOracle`` (a method
cannot tell them apart). A request of more than ``SMALL_REQUEST`` candidates
is split across the actors that serve its task and gathered in order; a
smaller one (every checkpoint's validation and test evaluation, CBBT's and
ZIP's small asks) goes whole to one of them, and so do ``info`` and
``zero_shot``: splitting would cost each actor a dispatch (3-5 ms) for a
fraction of a millisecond of GPU work. A small validation or test request
with visual prompts on many images (a checkpoint's test evaluation on
Food101 is 30,300 passes of the image tower: seconds of one GPU) is split by
images instead, in pieces fixed by the request (``map_images``). A whole request goes to the less
loaded of two actors: the next two in the trial's own turn over the task's
actors (so requests spread, and every actor is looked at in turn), compared
by the work (candidates x images) each had outstanding when it last replied
to this trial. Actors report that with every reply, so knowing it costs no
round trip; it is as old as the trial's last request to the actor ("power of
two choices", which stale figures do not herd onto one actor). Which actor
serves a request never changes its result: the request's pieces are fixed by
its size and the task's actors, and identical devices compute a piece
identically. With ``actors_per_task``, a task is served by that many actors
only, so that an actor caches only its tasks' images.

An actor takes requests while one runs (a threaded actor): they queue for
its device thread by priority, then in arrival order (``DeviceQueue``), or merge
(``merge_wait_s``).

Query accounting lives in ``PooledOracle``, in the trial's process: its
``QueryMeter`` (the local oracle's, ``sweep.budget``) checks a request against
the budget and counts it once, before it is dispatched. The actors serve
unlimited oracles whose counts no one reads. Only numpy arrays (prompts,
losses, features) cross the wire.

When an actor's node is lost, Ray starts the actor again on another node and
its requests are resubmitted once it serves (for as long as
``unavailable_timeout_s``); they were counted once, before dispatch. When an
actor dies, Ray restarts it and resubmits its lost tasks, up to
``max_task_retries`` times per request; a retried task is not a new request,
so nothing is counted twice and nothing is lost. A request that kills its
actor every time fails with ``PoolError`` (its trial becomes a ``failed``
row) and the restarted actor serves the later requests. After
``max_restarts`` restarts an actor is gone for good: the pool's keeper
(``sweep.keeper``) starts a fresh actor in its place, once for all trials,
and a request that finds its actor already replaced is resubmitted to the
new one. Requests of other trials that were waiting on an actor when it died
for good fail alike; each request is bounded, and the sweep goes on.
"""

from __future__ import annotations

import os
import time
import zlib
from typing import Any

import numpy as np

from methods.base import Evaluation
from sweep.budget import BudgetSpec, Metered, QueryMeter
from sweep.errors import ConfigError, PromptTuningError
from sweep.keeper import ActorKeeper
from sweep.oracle.requests import PromptLayout, TaskKey, check_subset, check_views, count_candidates
from sweep.oracle.server import ActorSetupError, OracleServer, ServerBase
from sweep.spec import ModelSpec

# The model's side (torch, open_clip) is imported where it runs, when an OracleServer starts
# in an actor: a trial's process, which only sends requests, never loads it.

__all__ = ["SMALL_REQUEST", "OraclePool", "OracleServer", "PlacementError", "PoolError",
           "PooledOracle", "ServerBase", "TaskKey"]

#: Requests of at most this many candidates go whole to one actor instead of being split.
SMALL_REQUEST = 4
#: Requests an actor takes at once (queued for its device, or merging).
ACTOR_THREADS = 32
#: A small validation or test request with visual prompts on more images than this is split by
#: images into pieces of at most this many (a single candidate on Food101's 30,300 test images
#: is seconds of one GPU's time; a piece of 2,048 is still far above a request's dispatch).
IMAGE_PIECE = 2048


class PoolError(PromptTuningError, RuntimeError):
    """A request failed: its oracle actor died serving it more often than the pool retries."""


class PlacementError(PoolError):
    """Oracle actors did not start in time: the GPUs (or CPUs) they ask for never came."""


def _combine_images(parts: list[Evaluation], sizes: list[int], features: bool) -> Evaluation:
    """One Evaluation from pieces of the same candidates on consecutive ranges of images (``sizes``
    images each): losses the image-weighted mean of the pieces' means, accuracies from the
    pieces' counts of correct images, features and labels in image order."""
    m = np.array(sizes, dtype=np.float64)[:, None]
    losses = (np.stack([p.losses for p in parts]) * m).sum(axis=0) / m.sum()
    correct = np.rint(np.stack([p.accuracies for p in parts]) * m).sum(axis=0)
    out = Evaluation(losses=losses, accuracies=correct / m.sum())
    if not features:
        return out
    first = parts[0]
    return Evaluation(losses=out.losses, accuracies=out.accuracies,
                      text_features=first.text_features,
                      image_features=np.concatenate([p.image_features for p in parts], axis=1),
                      labels=np.concatenate([p.labels for p in parts]),
                      logit_scale=first.logit_scale)


def _concat(parts: list[Evaluation], features: bool) -> Evaluation:
    """One Evaluation from the per-actor pieces of a batch, in candidate order."""
    if len(parts) == 1:
        return parts[0]
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
    if not features:
        return Evaluation(losses=cat("losses"), accuracies=cat("accuracies"))
    first = parts[0]
    # Without visual prompts every piece carries the same (1, m, D) image features.
    images = first.image_features if first.image_features.shape[0] == 1 else cat("image_features")
    return Evaluation(losses=cat("losses"), accuracies=cat("accuracies"),
                      text_features=cat("text_features"), image_features=images,
                      labels=first.labels, logit_scale=first.logit_scale)


class OraclePool:
    """Oracle actors started once per sweep; pass the pool (it pickles) to the trials.

    Args:
        model_spec: the model every actor loads.
        actors: number of actors.
        gpus_per_actor: GPUs each actor holds (0 on CPU-only machines).
        cpus_per_actor: CPUs each actor reserves. On a CPU-only machine keep 0:
            trials that hold CPUs while waiting for actors that also need CPUs
            deadlock silently (TOOLCHAIN.md).
        threads_per_actor: torch threads in each actor (default: cores / actors).
        max_restarts: how often Ray may restart one actor before the keeper replaces it.
        max_task_retries: how often a request lost with its actor is resubmitted.
        server: the actors' class (``OracleServer`` or a subclass).
        pixel_folder: each node's folder of decoded images (``~`` is each node's home;
            None: each node's default, ``sweep.data.node_cache_folder``).
        cache_bytes: each actor's device-cache budget (None: its device's default).
        actors_per_task: actors that serve one task (None: all of them); fewer keep each
            actor's caches to fewer tasks, and let concurrent trials of a task meet on one
            actor, where their requests can merge.
        merge_wait_s: how long an actor lets a request wait for others of the same task to
            merge with (0: no merging; each actor serves one request at a time).
        merge_candidates: a merged batch with this many candidates runs at once.
        image_piece: a small validation or test request with visual prompts on more images
            than this is split by images (``map_images``).
        unavailable_timeout_s: how long a request waits for an actor that is unavailable
            (its node lost: Ray starts it again elsewhere) to serve again.
        tasks: (data set, data root) of the tasks the actors will serve, loaded by each
            actor as it starts (``OracleServer``).
    """

    def __init__(self, model_spec: ModelSpec, actors: int = 1, *, gpus_per_actor: float = 0,
                 cpus_per_actor: float = 0, threads_per_actor: int | None = None,
                 max_restarts: int = 3, max_task_retries: int = 3,
                 server: type = OracleServer, pixel_folder: str | None = None,
                 cache_bytes: int | None = None, actors_per_task: int | None = None,
                 merge_wait_s: float = 0.0, merge_candidates: int = 256,
                 image_piece: int = IMAGE_PIECE, unavailable_timeout_s: float = 900.0,
                 tasks: tuple[tuple[str, str | None], ...] = ()) -> None:
        import ray
        from ray import cloudpickle
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        if actors < 1:
            raise ConfigError(f"a pool needs at least one actor; got {actors}")
        if actors_per_task is not None and not 1 <= actors_per_task <= actors:
            raise ConfigError(f"actors_per_task must be in [1, {actors}]; got {actors_per_task}")
        self.actors_per_task = actors_per_task or actors
        if image_piece < 1:
            raise ConfigError(f"image_piece must be at least 1; got {image_piece}")
        self.image_piece = image_piece
        self.unavailable_timeout_s = unavailable_timeout_s
        if threads_per_actor is None and not gpus_per_actor:
            threads_per_actor = max(1, (os.cpu_count() or 1) // actors)
        # A threaded actor: it takes requests while one runs (they queue in order, or merge).
        options = dict(num_cpus=cpus_per_actor, num_gpus=gpus_per_actor,
                       max_restarts=max_restarts, max_task_retries=max_task_retries,
                       max_concurrency=ACTOR_THREADS)
        args = (model_spec, "cuda" if gpus_per_actor else "cpu", threads_per_actor, pixel_folder,
                cache_bytes, merge_wait_s, merge_candidates, tuple(tasks))
        self.model_spec = model_spec
        self._asks = (gpus_per_actor, cpus_per_actor)
        self.max_restarts, self.max_task_retries = max_restarts, max_task_retries
        remote = ray.remote(server).options(**options)
        self.actors = [remote.remote(*args) for _ in range(actors)]
        self.generations = [0] * actors
        #: each actor's outstanding work as it last told this process (a trial's copy of the
        #: pool learns it from the replies to its own requests).
        self.loads = [0] * actors
        # On the driver's node: a lost GPU node must not take the keeper (and the
        # replacements it owns) with it.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self._keeper = ray.remote(ActorKeeper).options(num_cpus=0, scheduling_strategy=here).remote(
            cloudpickle.dumps((server, options, args)), self.actors)

    def wait_started(self, timeout_s: float) -> list[dict[str, Any]]:
        """Wait until every actor has started (placed on a node, its model and tasks loaded);
        returns where each runs (``ServerBase.place``: node, process, device).

        Raises:
            PlacementError: some had not within ``timeout_s``; every actor is stopped.
            ActorSetupError: an actor could not be set up on its node (its device, model,
                cache folder or data); every actor is stopped.
        """
        import ray

        refs = [actor.place.remote() for actor in self.actors]
        _, waiting = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        if not waiting:
            try:
                return [_get(ref) for ref in refs]
            except ray.exceptions.RayActorError as exc:  # its constructor itself died
                self.shutdown()
                raise ActorSetupError.died_starting(exc) from exc
            except BaseException:
                self.shutdown()
                raise
        total = ray.cluster_resources()
        gpus, cpus = self._asks
        self.shutdown()
        raise PlacementError(
            f"{len(waiting)} of {len(refs)} oracle actors had not started after {timeout_s:g} s "
            f"([resources] placement_timeout_s): each asks for {gpus:g} GPUs and {cpus:g} CPUs, "
            f"and the cluster has {total.get('GPU', 0):g} GPUs and {total.get('CPU', 0):g} CPUs "
            "in all; start the GPU nodes, or ask for what the cluster has")

    def refresh(self) -> None:
        """Take the keeper's current actors (a copy pickled before a replacement has the old)."""
        import ray

        actors, generations = ray.get(self._keeper.current.remote())
        self.actors, self.generations = list(actors), list(generations)

    def _send(self, slot: int, request: tuple, priority: float):
        """``serve(*request)`` on the actor in ``slot``, with the trial's priority: its ref."""
        return self.actors[slot].serve.remote(*request, priority=priority)

    def _resolve(self, slot: int, ref, args: tuple, priority: float,
                 resubmitted: bool = False) -> Any:
        """The result of ``ref``, the request ``serve(*args)`` to the actor in ``slot``; PoolError
        if it died. Notes the actor's load that came with it."""
        import ray

        generation = self.generations[slot]
        try:
            result, self.loads[slot] = _get(ref)
            return result
        except ray.exceptions.ActorDiedError as exc:
            actor, self.generations[slot], replaced = ray.get(
                self._keeper.replace.remote(slot, generation))
            self.actors[slot] = actor
            if replaced or resubmitted:  # this request saw the actor's last death
                raise PoolError(
                    f"oracle actor {slot} died serving this request and is gone for good "
                    f"(max_restarts={self.max_restarts}); a fresh actor serves later requests. "
                    f"{_first_line(exc)}") from exc
        except ray.exceptions.ActorUnavailableError as exc:
            # Not this request's doing (that is a death): the actor's node is gone and Ray is
            # starting it elsewhere, or it is restarting. Resubmitted once it serves again;
            # the request was counted once, before dispatch.
            self._wait_available(slot, exc)
            return self._resolve(slot, self._send(slot, args, priority), args, priority,
                                 resubmitted)
        except ray.exceptions.RayActorError as exc:  # restarting; this request's retries are spent
            raise PoolError(
                f"oracle actor {slot} died serving this request {1 + self.max_task_retries} "
                f"times (max_task_retries={self.max_task_retries}); it restarts for later "
                f"requests. {_first_line(exc)}") from exc
        # The actor was gone before this request reached it and another request had it
        # replaced: resubmit once, to the replacement.
        retry = self._send(slot, args, priority)
        return self._resolve(slot, retry, args, priority, resubmitted=True)

    def _wait_available(self, slot: int, cause: BaseException) -> None:
        """Wait until the actor in ``slot`` answers again (or has died for good: the caller's
        resubmission then finds it replaced); PoolError after ``unavailable_timeout_s``."""
        import ray

        deadline = time.monotonic() + self.unavailable_timeout_s
        while time.monotonic() < deadline:
            try:
                ray.get(self.actors[slot].pid.remote(), timeout=max(1.0, deadline - time.monotonic()))
                return
            except ray.exceptions.ActorDiedError:
                return
            except (ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):
                time.sleep(0.5)
        raise PoolError(f"oracle actor {slot} has not served again after "
                        f"{self.unavailable_timeout_s:g} s ([resources] placement_timeout_s): "
                        f"its node was lost and no node with what it asks for came. "
                        f"{_first_line(cause)}") from cause

    def slots(self, key: TaskKey) -> list[int]:
        """The actors that serve ``key``'s task: ``actors_per_task`` of them, from a slot fixed
        by the task (so that each task's images are cached on those actors only)."""
        n, k = len(self.actors), self.actors_per_task
        first = zlib.crc32(repr(key).encode()) % n if k < n else 0
        return [(first + i) % n for i in range(k)]

    def submit(self, slot: int, method: str, work: int, *args, priority: float = 0.0) -> Any:
        """Run ``method(*args)`` on the actor in ``slot``; ``work`` is its size (candidates x
        images); ``priority``: the actor serves higher ones first (``sweep.oracle.merging``)."""
        request = (method, work, *args)
        return self._resolve(slot, self._send(slot, request, priority), request, priority)

    def pick(self, slots: list[int]) -> int:
        """Of the first two of ``slots``, the one with less outstanding work (ties: the first)."""
        return min(slots[:2], key=lambda slot: self.loads[slot])

    def map_candidates(self, method: str, head: tuple, text, visual, tail: tuple, n: int,
                       images: int, features: bool, slots: list[int],
                       priority: float = 0.0) -> Evaluation:
        """Split n candidates (on ``images`` images each) into contiguous pieces, one per actor of
        ``slots``, and gather them in order; a request of at most ``SMALL_REQUEST`` candidates
        goes whole to the less loaded of ``slots[0]`` and ``slots[1]``.

        Each actor runs ``method(*head, text_piece, visual_piece, *tail)``.
        """
        if n <= SMALL_REQUEST:
            slots, parts = [self.pick(slots)], 1
        else:
            parts = min(n, len(slots))
        pieces = np.array_split(np.arange(n), parts)
        jobs = []
        for slot, idx in zip(slots, pieces):
            sl = slice(int(idx[0]), int(idx[-1]) + 1)
            jobs.append((slot, (method, len(idx) * images, *head, None if text is None else text[sl],
                                None if visual is None else visual[sl], *tail)))
        return _concat(self._scatter(jobs, priority), features)

    def map_images(self, head: tuple, text, visual, features: bool, n: int, images: int,
                   slots: list[int], priority: float = 0.0) -> Evaluation:
        """``evaluate_split(*head, text, visual, features)`` of n candidates on ``images`` images,
        split into ceil(images / image_piece) consecutive ranges of images served by ``slots`` in
        turn, and combined (``_combine_images``). The pieces depend on the request alone, so
        the number of actors never changes the result; the combined loss equals the whole
        evaluation's to float rounding (a weighted mean of means)."""
        pieces = np.array_split(np.arange(images), -(-images // self.image_piece))
        jobs = [(slots[i % len(slots)], ("evaluate_split", n * len(idx), *head, text, visual,
                                         features, (int(idx[0]), int(idx[-1]) + 1)))
                for i, idx in enumerate(pieces)]
        return _combine_images(self._scatter(jobs, priority), [len(idx) for idx in pieces],
                               features)

    def _scatter(self, jobs: list[tuple[int, tuple]], priority: float) -> list[Any]:
        """Send every (slot, request) at once, then gather their results in order."""
        refs = [self._send(slot, request, priority) for slot, request in jobs]
        return [self._resolve(slot, ref, request, priority)
                for (slot, request), ref in zip(jobs, refs)]

    def oracle(self, key: TaskKey, layout: PromptLayout, budget: BudgetSpec | None = None,
               priority: float = 0.0) -> PooledOracle:
        self.refresh()
        return PooledOracle(self, key, layout, budget, priority)

    def shutdown(self) -> None:
        """Stop every actor, replacements included, and the keeper."""
        import ray

        self.refresh()
        for actor in (*self.actors, self._keeper):
            ray.kill(actor, no_restart=True)
        self.actors = []


def _get(ref) -> Any:
    """``ray.get``; the oracle's own errors (a bad prompt, an unreadable image) come back as such.

    Any other exception in an actor is a bug and keeps Ray's wrapper with the remote traceback.
    """
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, PromptTuningError):
            raise exc.cause from None
        raise


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


class PooledOracle(Metered):
    """A trial's view of the pool, with ClipOracle's interface and its own budget.

    ``gradient`` serves white-box methods (``needs_gradient``: CoOp, an upper bound whose
    rows say ``black_box`` false): the pool's actors hold local models, so they can.
    """

    glass_box = True

    def __init__(self, pool: OraclePool, key: TaskKey, layout: PromptLayout,
                 budget: BudgetSpec | None = None, priority: float = 0.0) -> None:
        self.pool = pool
        self.key = key
        self.layout = layout
        #: sent with every request: the actors serve higher priorities first (the driver gives
        #: trials with longer chains of requests higher ones).
        self.priority = priority
        self._slots = pool.slots(key)
        # Each trial's oracle starts the turn at its own actor (a hash of its task and layout:
        # deterministic), so that single requests of concurrent trials spread over the pool.
        self._turn = zlib.crc32(repr((key, layout)).encode())
        self._info = pool.submit(pool.pick(self._next_slots()), "info", 0, key, layout,
                                 priority=priority)
        self.meter = QueryMeter(budget, self.train_size, self.num_classes)

    def _next_slots(self) -> list[int]:
        """The actors of this task, starting with the one whose turn it is."""
        i = self._turn % len(self._slots)
        self._turn += 1
        return self._slots[i:] + self._slots[:i]

    text_shape = property(lambda self: tuple(self._info["text_shape"]))
    visual_shape = property(lambda self: tuple(self._info["visual_shape"]))
    train_size = property(lambda self: int(self._info["train_size"]))
    num_classes = property(lambda self: int(self._info["num_classes"]))
    device = property(lambda self: self._info["device"])
    precision = property(lambda self: self._info["precision"])

    def initial_text(self) -> np.ndarray:
        return np.array(self._info["initial_text"])

    def initial_visual(self) -> np.ndarray:
        return np.array(self._info["initial_visual"])

    def model_stats(self) -> dict[str, object]:
        return dict(self._info["model_stats"])

    def _charge(self, text, visual, subset, views):
        """Check a training request and count it (BudgetExceededError: nothing counted);
        returns its subset, views, candidates and images."""
        subset = check_subset(subset, self.train_size)
        images = self.train_size if subset is None else len(subset)
        views = check_views(views, images)
        n = count_candidates(self.layout, self.text_shape, self.visual_shape, text, visual)
        self.meter.charge(self.meter.cost(n, None if subset is None else len(subset)))
        return subset, views, n, images

    def evaluate(self, text=None, visual=None, *, features: bool = False, subset=None,
                 views=None) -> Evaluation:
        """Counted like ClipOracle.evaluate: checked and charged once, before dispatch. The
        views travel with the request: every actor serving a piece scores the same ones."""
        subset, views, n, images = self._charge(text, visual, subset, views)
        tail = (features, subset) if views is None else (features, subset, views)
        return self.pool.map_candidates("evaluate", (self.key, self.layout), _f32(text), _f32(visual),
                                        tail, n, images, features, self._next_slots(),
                                        self.priority)

    def evaluate_split(self, split: str, text=None, visual=None, *, features: bool = False) -> Evaluation:
        n = count_candidates(self.layout, self.text_shape, self.visual_shape, text, visual)
        if split not in self._info["split_sizes"]:
            raise ConfigError(f"split must be one of {tuple(self._info['split_sizes'])}; got {split!r}")
        images = self._info["split_sizes"][split]
        if split == "dev":  # a method's own selection draw: the budget pays (ClipOracle)
            self.meter.charge(self.meter.cost(n, images))
        else:
            self.meter.charge_eval(n, images)
        if visual is not None and n <= SMALL_REQUEST and images > self.pool.image_piece:
            # Each image costs a pass of the image tower: a large split goes out in pieces.
            return self.pool.map_images((self.key, self.layout, split), _f32(text), _f32(visual),
                                        features, n, images, self._next_slots(), self.priority)
        return self.pool.map_candidates("evaluate_split", (self.key, self.layout, split), _f32(text),
                                        _f32(visual), (features,), n, images, features,
                                        self._next_slots(), self.priority)

    def zero_shot(self, split: str = "test") -> Evaluation:
        images = self._info["split_sizes"].get(split, self.train_size)
        self.meter.charge_eval(1, images)
        return self.pool.submit(self.pool.pick(self._next_slots()), "zero_shot", images, self.key,
                                self.layout, split, priority=self.priority)

    def gradient(self, text=None, visual=None, *, subset=None, views=None):
        """ClipOracle.gradient through one actor (true gradients: for white-box methods only),
        counted like ``evaluate``."""
        subset, views, n, images = self._charge(text, visual, subset, views)
        return self.pool.submit(self.pool.pick(self._next_slots()), "gradient", n * images,
                                self.key, self.layout, _f32(text), _f32(visual), subset, views,
                                priority=self.priority)


def _f32(x):
    return None if x is None else np.ascontiguousarray(x, dtype=np.float32)
