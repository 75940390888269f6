"""Oracle actors whose arithmetic is simulated: the GPUs of ``bench.cluster``.

A ``SimulatedServer`` is an oracle actor like ``sweep.oracle.OracleServer``
(the same ``ServerBase``: requests queue by priority and arrival or merge, and
every reply carries the actor's load) that holds no model and reads no image. A
forward takes the time the cost model gives (``forward_seconds``), slept
while the actor's device lock is held (a sleeping actor costs no CPU), times
``time_scale``; everything else (Ray's dispatch, the pool, the trial
workers' methods) is real. The cost model:

- FLOPs from the model's architecture as in ``sweep.tuning.cost``
  (``Architecture``: the text tower per candidate and class, the image tower
  per image with visual prompts, else each task's image features once per
  actor, and the logits), at the device's rate and ``EFFICIENCY`` of peak;
- plus ``FORWARD_S`` per forward: the launch-bound floor of a forward on a
  GPU (about 200 kernel launches of about 5 us: an assumption, stated).
  Dispatch through the pool is not added: it happens for real here.

Task sizes are CoOp's (``SPLIT_SIZES``): k shots a class to train on, min(k, 4)
to validate on, the published test split. Losses are synthetic and
deterministic: a function of each candidate alone (its distance to a target
drawn per task), plus a term of the mini-batch, so merged and separate
requests give the same rows and the methods' searches move. Features (for
adapter methods) are synthetic as well, with the shapes a CLIP's would have.
"""

from __future__ import annotations

import math
import time
import zlib
from typing import Any

import numpy as np

from methods.base import Evaluation
from sweep.errors import ModelError
from sweep.oracle import PromptLayout, ServerBase, TaskKey
from sweep.spec import ModelSpec
from sweep.tuning.cost import SPLIT_SIZES, Architecture, Device

__all__ = ["FORWARD_S", "SimulatedServer", "simulated_server"]

#: Seconds of device time a forward costs whatever its size (assumed: launch-bound floor).
FORWARD_S = 0.001
#: The scale of the synthetic target prompts (like a CLIP's token embeddings).
TARGET_STD = 0.02


def simulated_server(device: Device, time_scale: float = 1.0) -> type:
    """A ``SimulatedServer`` class for ``device`` whose simulated time is slept ``time_scale``-fold."""
    return type(f"Simulated{device.name}", (SimulatedServer,),
                {"device": device, "time_scale": time_scale})


class SimulatedServer(ServerBase):
    """An oracle actor that sleeps its requests' cost-model time (``simulated_server`` sets the
    device and time scale); arguments as ``OracleServer``'s, of which the model's is used."""

    device: Device
    time_scale: float = 1.0
    #: the driver skips its check of the data root and images: none are read.
    needs_data = False

    def __init__(self, model_spec: ModelSpec, device: str | None = None, threads: int | None = None,
                 pixel_folder: str | None = None, cache_bytes: int | None = None,
                 merge_wait_s: float = 0.0, merge_candidates: int = 256,
                 tasks: tuple[tuple[str, str | None], ...] = ()) -> None:
        super().__init__(merge_wait_s, merge_candidates)
        self.arch = Architecture.of(model_spec)
        self.precision = model_spec.precision or "bf16"
        self._featured: set[TaskKey] = set()  # tasks whose image features this actor holds
        self.busy_s = 0.0  # simulated device time slept (unscaled)
        self.unmerged_s = 0.0  # what the requests would have cost run one by one (unscaled)
        self.first = self.last = None  # when the first forward started and the last ended
        #: simulated device seconds (scaled) per whole second of the clock (time.time()):
        #: the actors' busy time over the run, which bench.cluster adds up.
        self.busy_by_second: dict[int, float] = {}

    def place(self) -> dict[str, Any]:
        return {**super().place(), "device": f"simulated {self.device.name}",
                "precision": self.precision}

    # ---------------------------------------------------------------- the cost model
    def _sizes(self, key: TaskKey) -> dict[str, int]:
        classes, train, _, test = SPLIT_SIZES[key.dataset]
        return {"classes": classes, "train": min(key.shots * classes, train),
                "val": min(key.shots, 4) * classes, "dev": min(key.shots, 4) * classes,
                "test": test}

    def forward_seconds(self, key: TaskKey, layout: PromptLayout, candidates: int, images: int,
                        features_once: bool, augmented: bool = False) -> float:
        """Device seconds of one forward of ``candidates`` on ``images`` images each (``augmented``:
        views of them, whose features are computed for the request and never kept)."""
        arch, sizes = self.arch, self._sizes(key)
        classes = sizes["classes"]
        text = candidates * arch.text_flops(layout.n_text, classes)
        if layout.n_visual:
            image = candidates * images * arch.image_flops(layout.n_visual)
        elif augmented:  # the views' features, shared by the request's candidates
            image = images * arch.image_flops(0)
        else:  # the task's image features, once per actor (as ImageStore caches them)
            image = (sizes["train"] + sizes["val"] + sizes["test"]) * arch.image_flops(0) \
                if features_once else 0.0
        logits = candidates * images * classes * 2 * arch.embed_dim
        precision = layout.precision or self.precision  # a method's own (CBBT: fp32)
        return FORWARD_S + self.device.seconds(text + logits, image, precision)

    def _run(self, key: TaskKey, layout: PromptLayout, images: int, requests: list[int],
             augmented: bool = False) -> None:
        """Sleep the merged forward of ``requests`` (candidates each); note both costs."""
        first = not layout.n_visual and not augmented and key not in self._featured
        self._featured.add(key)
        seconds = self.forward_seconds(key, layout, sum(requests), images, first, augmented)
        self.unmerged_s += sum(self.forward_seconds(key, layout, n, images, first and i == 0,
                                                    augmented)
                               for i, n in enumerate(requests))
        self.busy_s += seconds
        start, clock = time.perf_counter(), time.time()
        self.first = start if self.first is None else self.first
        time.sleep(seconds * self.time_scale)
        self.last = time.perf_counter()
        end = clock + self.last - start
        for second in range(int(clock), int(end) + 1):  # the forward's share of each second
            share = min(end, second + 1) - max(clock, second)
            if share > 0:
                self.busy_by_second[second] = self.busy_by_second.get(second, 0.0) + share

    # ---------------------------------------------------------------- synthetic answers
    def _target(self, key: TaskKey, layout: PromptLayout, shape: tuple[int, ...], part: str):
        seed = zlib.crc32(repr((key, layout, part)).encode())
        return np.random.default_rng(seed).normal(0, TARGET_STD, size=shape).astype(np.float32)

    def _losses(self, key: TaskKey, layout: PromptLayout, text, visual, offset: float) -> np.ndarray:
        """Per candidate: ln(C) x (0.5 + 0.4 tanh(distance to the task's target)) + offset."""
        distance = 0.0
        for part, x in (("text", text), ("visual", visual)):
            if x is not None:
                target = self._target(key, layout, x.shape[1:], part)
                distance = distance + ((x - target) ** 2).reshape(len(x), -1).mean(axis=1) \
                    / TARGET_STD ** 2
        classes = self._sizes(key)["classes"]
        return (math.log(classes) * (0.5 + 0.4 * np.tanh(distance)) + offset).astype(np.float32)

    def _answer(self, key: TaskKey, layout: PromptLayout, text, visual, features: bool,
                images: int, offset: float) -> Evaluation:
        losses = self._losses(key, layout, text, visual, offset)
        accuracies = np.clip(np.exp(-losses), 0.0, 1.0).astype(np.float32)
        if not features:
            return Evaluation(losses=losses, accuracies=accuracies)
        n, classes, dim = len(losses), self._sizes(key)["classes"], self.arch.embed_dim
        rng = np.random.default_rng(zlib.crc32(repr(key).encode()))
        base = rng.normal(size=(classes, dim)).astype(np.float32)
        base /= np.linalg.norm(base, axis=1, keepdims=True)
        x = text if text is not None else visual
        shift = np.resize(x.reshape(n, -1).mean(axis=1, keepdims=True), (n, 1, 1)) * base[None, :1]
        txt = base[None] + shift
        txt /= np.linalg.norm(txt, axis=2, keepdims=True)
        labels = np.arange(images) % classes
        img = base[labels] + 0.5 * rng.normal(size=(images, dim)).astype(np.float32)
        img /= np.linalg.norm(img, axis=1, keepdims=True)
        return Evaluation(losses=losses, accuracies=accuracies, text_features=txt,
                          image_features=img[None], labels=labels, logit_scale=100.0)

    def _serve(self, merge: tuple, key: TaskKey, layout: PromptLayout, text, visual,
               features: bool, images: int, offset: float, augmented: bool = False) -> Evaluation:
        def forward(t, v) -> Evaluation:  # under the device lock: the merged batch
            self._run(key, layout, images, self.device_queue.running, augmented)
            return self._answer(key, layout, t, v, features, images, offset)

        rows = len(text if text is not None else visual)
        return self.device_queue.run(merge, text, visual, rows, forward)

    # ---------------------------------------------------------------- the oracle's interface
    def info(self, key: TaskKey, layout: PromptLayout) -> dict[str, Any]:
        if key.dataset not in SPLIT_SIZES:
            raise ValueError(f"the simulator knows the split sizes of {sorted(SPLIT_SIZES)}")
        arch, sizes = self.arch, self._sizes(key)
        text = ((arch.text_layers, layout.n_text, arch.text_width) if layout.deep
                else (layout.n_text, arch.text_width))
        visual = ((arch.vision_layers, layout.n_visual, arch.vision_width) if layout.deep
                  else (layout.n_visual, arch.vision_width))
        return {
            "text_shape": text, "visual_shape": visual,
            "initial_text": np.zeros(text, np.float32), "initial_visual": np.zeros(visual, np.float32),
            # Typical magnitudes of a CLIP's (synthetic: they scale the subspaces only).
            "model_stats": {"token_embedding_std": TARGET_STD, "patch_weight_mean": 0.0,
                            "patch_weight_std": TARGET_STD, "patch_fan_in": 3 * arch.patch ** 2,
                            "text_hidden_std": (1.0,) * arch.text_layers,
                            "visual_hidden_std": (1.0,) * arch.vision_layers},
            "train_size": sizes["train"], "num_classes": sizes["classes"],
            "split_sizes": {"val": sizes["val"], "test": sizes["test"], "dev": sizes["dev"]},
            "device": f"simulated {self.device.name}",
            "precision": layout.precision or self.precision,
        }

    def evaluate(self, key: TaskKey, layout: PromptLayout, text, visual, features: bool,
                 subset, views=None) -> Evaluation:
        images = self._sizes(key)["train"] if subset is None else len(subset)
        offset = 0.0 if subset is None else 0.05 * math.sin(float(np.sum(subset)))
        if views is not None:  # the views move the loss as a mini-batch does
            offset += 0.02 * math.sin(float(np.sum(views)))
        merge = ("train", key, layout, features, None if subset is None else subset.tobytes(),
                 None if views is None else views.tobytes())
        return self._serve(merge, key, layout, text, visual, features, images, offset,
                           views is not None)

    def evaluate_split(self, key: TaskKey, layout: PromptLayout, split: str, text, visual,
                       features: bool, images: tuple[int, int] | None = None) -> Evaluation:
        offset = {"val": 0.02, "test": 0.04, "dev": 0.03}[split]
        count = self._sizes(key)[split] if images is None else images[1] - images[0]
        return self._serve((split, key, layout, features, images), key, layout, text, visual,
                           features, count, offset)

    def gradient(self, *args, **kwargs):
        raise ModelError("the simulated GPUs serve no gradients: leave white-box methods out")

    def zero_shot(self, key: TaskKey, layout: PromptLayout, split: str) -> Evaluation:
        text = np.zeros((1, *self.info(key, layout)["text_shape"]), np.float32)
        return self.evaluate_split(key, layout, split, text, None, False)

    def memory(self) -> dict[str, Any]:
        """What the simulator measures: device time (unscaled), its span, requests and forwards."""
        queue = self.device_queue
        return {"busy_s": self.busy_s, "unmerged_s": self.unmerged_s, "first": self.first,
                "last": self.last, "requests": self.requests, "evaluations": queue.requests,
                "forwards": queue.batches,
                "busy_by_second": {str(k): v for k, v in sorted(self.busy_by_second.items())}}
