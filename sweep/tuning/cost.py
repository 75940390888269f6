"""What a sweep will cost before it runs: its requests, their FLOPs, GPU hours and wall time.

``python -m sweep.launch SPEC --plan`` prints this; nothing starts (no Ray) and
no image is read. The cost model is arithmetic on stated inputs, not a
measurement:

- the architecture comes from the model's open_clip config (a hub model's
  from the local Hugging Face cache; ViT image towers only): a transformer layer costs 24 W^2 FLOPs a token (its projections and
  MLP) plus 4 T W for attention over T tokens, the patch embedding
  2 x 3 x patch^2 x W a patch (FLOPs count 2 per multiply-add, as
  ``torch.utils.flop_counter`` does: ViT-B/32's image tower is 9.4 GFLOP an
  image, the 4.4 G multiply-adds of open_clip's table);
- a candidate's text costs its shared prefix (start token and context) once
  and ``SUFFIX_TOKENS`` tokens per class (name, full stop, end of text:
  ``sweep.oracle.shared_prefix``); with visual prompts every image costs a
  full image tower per candidate, without them the image features of a
  task's images are computed once per actor that serves it, and those of a
  request's augmented views (``augment``) once per request;
- a trial's asks are its budget over the price of one ask (each method's
  ask size and mini-batch at its fixed values and config defaults), summed
  over its runs where it runs once per budget level (``[budget] limits``),
  plus one candidate on validation and test at each checkpoint;
- a device runs the text tower at its fp32 rate (the text tower is always
  fp32) and the image tower at the rate of the model's precision, each at
  ``EFFICIENCY`` of peak, and spends ``OVERHEAD_S`` dispatching each request
  (measured here through the pool: 3-5 ms, ``bench/results/pool.json``);
- split sizes are CoOp's published ones (``SPLIT_SIZES``), so that a plan
  needs no data root.
"""

from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import dataclass
from pathlib import Path

from methods.subspace import ModelStats, Parametrisation
from sweep.data import SPLIT_SIZES
from sweep.errors import ConfigError
from sweep.oracle import EMBEDDED_CONFIG
from sweep.spec import EMBEDDED_MODEL, HF_HUB_PREFIX, SWEEP_METHODS, ModelSpec, SweepSpec
from sweep.tuning.plan import Group, SweepPlan

__all__ = ["DEVICES", "SPLIT_SIZES", "Architecture", "Device", "GroupCost", "plan_cost"]

#: Tokens a class adds to a candidate's text (its name's tokens, ".", end of text): an average.
SUFFIX_TOKENS = 4
#: The fraction of peak a transformer forward reaches (assumed, SCALE.md: 40-60%).
EFFICIENCY = 0.4
#: Seconds of dispatch a request costs through the pool (measured: 3-5 ms).
OVERHEAD_S = 0.004

@dataclass(frozen=True)
class Device:
    """A GPU as the cost model sees it: peak dense rates (TFLOP/s) and dispatch overhead."""

    name: str
    bf16_tflops: float
    fp32_tflops: float

    def seconds(self, text_flops: float, image_flops: float, precision: str) -> float:
        image_rate = self.fp32_tflops if precision == "fp32" else self.bf16_tflops
        return (text_flops / self.fp32_tflops + image_flops / image_rate) / (EFFICIENCY * 1e12)


#: Peak dense rates from the vendor's data sheets (A10G: AWS's g5; H100 SXM).
DEVICES = {"a10g": Device("A10G", 70.0, 31.2), "h100": Device("H100", 990.0, 67.0)}


@dataclass(frozen=True)
class Architecture:
    """What the cost model needs of a CLIP: its towers' widths, depths and sizes."""

    text_width: int
    text_layers: int
    vision_width: int
    vision_layers: int
    patch: int
    image_size: int
    embed_dim: int

    @property
    def patches(self) -> int:
        return (self.image_size // self.patch) ** 2

    @classmethod
    def of(cls, model: ModelSpec) -> Architecture:
        """From the model's open_clip config file (never importing open_clip): open_clip's own,
        a hub model's in the local Hugging Face cache, or the embedded model's.

        Raises:
            ConfigError: no config is known for the name (a hub model not in the cache), or
                its image tower is not a ViT.
        """
        path = (Path(model.config) if model.config else EMBEDDED_CONFIG
                if model.name == EMBEDDED_MODEL else _hub_config(model.name)
                if model.name.startswith(HF_HUB_PREFIX) else _open_clip_config(model.name))
        cfg = json.loads(path.read_text())
        cfg = cfg.get("model_cfg", cfg)  # a hub model's config holds it with its preprocessing
        vision, text = cfg["vision_cfg"], cfg["text_cfg"]
        if not isinstance(vision.get("layers"), int) or not vision.get("patch_size"):
            raise ConfigError(f"the cost model knows ViT image towers only; {model.name} has none")
        size = vision["image_size"]
        return cls(text["width"], text["layers"], vision["width"], vision["layers"],
                   vision["patch_size"], size[0] if isinstance(size, list) else size,
                   cfg["embed_dim"])

    def text_flops(self, n_text: int, classes: int, suffix: int = SUFFIX_TOKENS) -> float:
        """One candidate's class embeddings (``suffix`` tokens a class)."""
        tokens = 1 + n_text + suffix * classes
        w = self.text_width
        return tokens * self.text_layers * 24 * w * w + classes * 2 * w * self.embed_dim

    def image_flops(self, n_visual: int) -> float:
        """One image through the image tower with ``n_visual`` prompt tokens."""
        w, t = self.vision_width, 1 + self.patches + n_visual
        layers = self.vision_layers * t * (24 * w * w + 4 * t * w)
        return layers + self.patches * 2 * 3 * self.patch ** 2 * w + 2 * w * self.embed_dim


def _hub_config(name: str) -> Path:
    """The config of hub model ``name`` in this machine's Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    repo = name.removeprefix(HF_HUB_PREFIX)
    found = try_to_load_from_cache(repo, "open_clip_config.json")
    if not isinstance(found, str):
        raise ConfigError(f"the cost model needs {name}'s open_clip_config.json, which is not in "
                          "this machine's Hugging Face cache ($HF_HOME)")
    return Path(found)


def _open_clip_config(name: str) -> Path:
    found = importlib.util.find_spec("open_clip")
    folder = Path(next(iter(found.submodule_search_locations))) / "model_configs" if found else None
    if folder is None or not (folder / f"{name}.json").is_file():
        raise ConfigError(f"the cost model needs {name}'s open_clip config, which is not found")
    return folder / f"{name}.json"


@dataclass(frozen=True)
class GroupCost:
    """What one group of a plan will cost on a device."""

    tag: str
    trials: int
    requests: int
    queries: int
    unit: str
    text_flops: float
    image_flops: float
    gpu_s: float


def _sizes(dataset: str, shots: int) -> tuple[int, int, int, int]:
    """Classes and the few-shot task's train, validation and test images."""
    if dataset not in SPLIT_SIZES:
        raise ConfigError(f"the cost model knows the split sizes of {', '.join(SPLIT_SIZES)}; "
                          f"not of {dataset!r}")
    classes, _, _, test = SPLIT_SIZES[dataset]
    return classes, shots * classes, min(shots, 4) * classes, test


def _ask(group: Group, arch: Architecture, train: int) -> tuple[int, int, object]:
    """Candidates and images of one ask, and the method's config (at its fixed values)."""
    registry = SWEEP_METHODS
    config = registry.make_config(group.method, dict(group.params or group.space.fixed))
    text = ((arch.text_layers, config.n_text, arch.text_width) if config.deep
            else (config.n_text, arch.text_width)) if config.n_text else None
    visual = ((arch.vision_layers, config.n_visual, arch.vision_width) if config.deep
              else (config.n_visual, arch.vision_width)) if config.n_visual else None
    stats = ModelStats(1.0, 0.0, 1.0, 3 * arch.patch ** 2, (1.0,) * arch.text_layers,
                       (1.0,) * arch.vision_layers)
    space = Parametrisation(config, text, visual, stats, 0).space
    method = registry.create(group.method, config, space, 0)
    images = train if method.minibatch is None else min(method.minibatch, train)
    return method.ask_size, images, config


def group_cost(spec: SweepSpec, group: Group, arch: Architecture, device: Device) -> GroupCost:
    classes, train, val, test = _sizes(group.dataset, group.shots)
    n, images, config = _ask(group, arch, train)
    budget = group.budget
    per_ask = {"candidate_evals": n, "calls": n * math.ceil(images / budget.batch_size),
               "images": n * images, "text_sequences": n * classes}[budget.unit]
    # A run per budget level (``[budget] limits``) for methods planned from the budget; one
    # run, with a checkpoint at each level besides its own, for the others.
    limits = budget.levels if group.per_budget else (budget.limit,)
    asks = sum(limit // per_ask for limit in limits) if per_ask else 0
    trials = group.samples * len(group.seeds)
    checkpoints = budget.checkpoints * len(limits) + sum(
        sum(level <= limit for level in budget.levels) for limit in limits)
    text = asks * n * arch.text_flops(config.n_text, classes)
    text += checkpoints * 2 * arch.text_flops(config.n_text, classes)
    if config.n_visual:
        image = (asks * n * images + checkpoints * (val + test)) * arch.image_flops(config.n_visual)
    else:  # features once per task and actor that serves it
        per_task = (train + val + test) * arch.image_flops(0)
        image = per_task * (spec.resources.actors_per_task or spec.resources.actors) / group.samples
        if config.augment:  # and the augmented views' features at every training request
            image += asks * images * arch.image_flops(0)
    logits = (asks * n * images + checkpoints * (val + test)) * classes * 2 * arch.embed_dim
    requests = asks + 2 * checkpoints + 1
    # the method's own precision (CBBT: fp32), else the model's (on a GPU: bf16)
    precision = config.precision or spec.model.precision or "bf16"
    seconds = device.seconds(text + logits, image, precision)
    return GroupCost(group.tag, trials, trials * requests, trials * asks * per_ask, budget.unit,
                     trials * (text + logits), trials * image,
                     trials * (seconds + requests * OVERHEAD_S))


def plan_cost(plan: SweepPlan, device: Device) -> str:
    """The plan's groups with their requests, FLOPs, GPU hours, and the sweep's wall time."""
    arch = Architecture.of(plan.spec.model)
    costs = [group_cost(plan.spec, g, arch, device) for g in plan.groups]
    res = plan.spec.resources
    gpus = res.actors * plan.spec.actor_gpus
    lines = [f"cost on {device.name} ({device.bf16_tflops:g} bf16 / {device.fp32_tflops:g} fp32 "
             f"TFLOP/s peak at {EFFICIENCY:.0%}, {OVERHEAD_S * 1e3:g} ms a request; "
             "sweep.tuning.cost states the model):",
             f"  {'group':<32} {'trials':>6} {'requests':>10} {'queries':>14} {'PFLOP':>9} "
             f"{'GPU h':>8}"]
    for c in costs:
        lines.append(f"  {c.tag:<32} {c.trials:>6} {c.requests:>10,} {c.queries:>14,} "
                     f"{(c.text_flops + c.image_flops) / 1e15:>9.2f} {c.gpu_s / 3600:>8.2f}")
    total = sum(c.gpu_s for c in costs)
    lines.append(f"  total: {total / 3600:.2f} GPU hours")
    if gpus:
        # A trial's requests run one after another: it keeps at most one GPU busy.
        busy = min(gpus, res.concurrency)
        lines.append(f"  wall time on {gpus:g} GPUs at concurrency {res.concurrency}: at least "
                     f"{total / busy / 3600:.2f} hours")
    else:
        lines.append(f"  oracle actors on CPUs ({plan.spec.actor_gpus_source}): no wall-time "
                     "estimate")
    return "\n".join(lines)
