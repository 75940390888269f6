"""What a sweep asks for, as frozen dataclasses: one per section of a specification.

``sweep.spec.parser`` reads a TOML file into them, checking every value; the
stages above read them and never a TOML table. Each field's comment is its
documentation (``sweeps/coop16.toml`` repeats them as a commented example).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sweep.budget import BudgetSpec
from sweep.errors import ConfigError, ModelError
from sweep.spec.plugins import Plugin
from sweep.spec.published import published_budget
from sweep.spec.spaces import MethodSpace

__all__ = [
    "EMBEDDED_MODEL", "EMBEDDED_SOURCE", "HF_HUB_PREFIX", "METRICS", "PRECISIONS", "SAMPLERS", "SCHEDULERS",
    "TRACKERS", "WANDB_MODES", "BudgetSection", "DataSection", "MethodSection", "ModelSpec",
    "ResourcesSection", "SearchSection", "SweepSpec", "TrackingSection",
]

#: The towers' precisions ``[model] precision`` takes (sweep.oracle.clip_oracle explains
#: what each does to the oracle's guarantees).
PRECISIONS = ("fp32", "bf16", "fp16")
#: The tiny CLIP that ships with the package (``python -m sweep.pretrain_tiny`` trains it;
#: its config and weights are in sweep/embedded/).
EMBEDDED_MODEL = "promptsweep-tiny"
#: The prefix of a model of the Hugging Face Hub (open_clip's): ``hf-hub:<org>/<repo>``, its
#: config and weights read from the node's Hugging Face cache.
HF_HUB_PREFIX = "hf-hub:"
#: What error messages call the embedded default.
EMBEDDED_SOURCE = "<embedded default>"
#: Optuna samplers: TPE (the default) or random search (a baseline for TPE).
SAMPLERS = ("tpe", "random")
#: Trial schedulers: none (every trial runs to the budget) or ASHA on the query count.
SCHEDULERS = ("none", "asha")
#: Selection metrics, validation only (test accuracy is reported, never optimised) -> mode.
METRICS = {"val_acc": "max", "val_loss": "min"}
#: The experiment trackers ``[tracking] trackers`` takes -> (the module that writes, the
#: package that installs it; ``pip install promptsweep[<tracker>]`` installs what it needs).
TRACKERS = {"mlflow": ("mlflow", "mlflow"), "tensorboard": ("tensorboardX", "tensorboardX"),
            "wandb": ("wandb", "wandb")}
#: Weights & Biases' modes ``[tracking] wandb_mode`` takes.
WANDB_MODES = ("offline", "online")


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """``[model]``: which CLIP. The embedded one, or an open_clip name with a tag or a checkpoint."""

    #: open_clip architecture name (``open_clip.list_models()``, or ``hf-hub:<repo>``),
    #: or the embedded tiny model.
    name: str = EMBEDDED_MODEL
    #: open_clip pretrained tag ("openai", "laion2b_s34b_b79k"; the weights must be cached);
    #: excludes ``checkpoint``.
    pretrained: str | None = None
    #: absolute path of a local state-dict file for the architecture ``name``.
    checkpoint: str | None = None
    #: path of an open_clip model config (JSON) defining ``name``, for architectures
    #: open_clip does not ship; registered in every process that loads the model.
    #: Not a TOML key (tests and benchmarks use it).
    config: str | None = None
    #: the image tower's precision: "fp32", "bf16" or "fp16" (``PRECISIONS``); None: fp32 on
    #: a CPU, on a GPU bf16 where it supports it, else fp16. The text tower, the logits and
    #: the losses are computed in fp32 whatever it is. A method config's own ``precision``
    #: (CBBT's and ``blackvip-tokens``': fp32) wins over it.
    precision: str | None = None

    def __post_init__(self) -> None:
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ModelError(f"model {self.name!r}: precision must be one of "
                             f"{', '.join(PRECISIONS)}; got {self.precision!r}")
        if self.pretrained and self.checkpoint:
            raise ModelError(
                f"model {self.name!r}: give a pretrained tag or a checkpoint, not both "
                f"(pretrained={self.pretrained!r}, checkpoint={self.checkpoint!r})"
            )

    @property
    def label(self) -> str:
        """A short name for tables: ``name``, ``name:tag`` or ``name:<file name>``."""
        if self.pretrained:
            return f"{self.name}:{self.pretrained}"
        if self.checkpoint:
            return f"{self.name}:{Path(self.checkpoint).name}"
        return self.name


@dataclass(frozen=True, kw_only=True)
class DataSection:
    """``[data]``: the tasks. Every data set x shots x seed is swept."""

    #: data set names (``sweep.data.DATASETS``); all but "digits" and its shifts
    #: ("digits-inverted", ...) are read from ``root``.
    datasets: tuple[str, ...] = ("digits",)
    #: the data root (a relative path is read from the specification's folder): CoOp's
    #: layout for CoOp names, class folders for "folder".
    root: str | None = None
    #: shots per class, each in ``sweep.data.SHOTS``.
    shots: tuple[int, ...] = (16,)
    #: seeds of the few-shot draw and of the method, each in [0, 2**32).
    seeds: tuple[int, ...] = (1,)
    #: the node-local folder of decoded images (``sweep.data.PixelCache``), absolute or
    #: starting with "~" (each node's home); None: each node's default
    #: (``$PROMPTSWEEP_CACHE``, else ~/.cache/promptsweep/pixels).
    cache: str | None = None


@dataclass(frozen=True, kw_only=True)
class BudgetSection:
    """``[budget]``: the largest budget; curves are recorded at checkpoints spaced up to it."""

    #: the unit the budget is enforced in (``sweep.budget.UNITS``).
    unit: str = "candidate_evals"
    #: queries allowed in that unit (>= 1); smaller budgets are read off the checkpoints.
    limit: int = 1000
    #: images per call (the mini-batch of the "calls" unit).
    batch_size: int = 128
    #: budget levels at which val and test accuracy are recorded (>= 8, roughly log-spaced).
    checkpoints: int = 8
    #: ``limit = "published"``: each method's published budget on each data set and shot
    #: count (``sweep.spec.published``), in its own unit; ``limit`` is 0 until
    #: ``SweepSpec.budget_for`` resolves it for a group. Not a TOML key: ``limit`` says it.
    published: bool = False
    #: the share of the published budget to run, in (0, 1].
    fraction: float = 1.0
    #: ``limits = [...]``: budget levels as written, query counts or (published) fractions;
    #: () for one budget. Methods planned from their budget run once per level.
    limits: tuple[float, ...] = ()
    #: the levels in queries, the last the limit (resolved with the limit); () for none.
    #: Not a TOML key: resolved from ``limits``.
    levels: tuple[int, ...] = ()

    @property
    def label(self) -> str:
        """How ``--plan`` and the log show it: ``3,600 candidate_evals (published)``."""
        share = "" if self.fraction == 1 or self.limits else f" x {self.fraction:g}"
        text = f"{self.limit:,} {self.unit}" + (f" (published{share})" if self.published else "")
        if self.levels:
            text += f", levels {', '.join(f'{v:,}' for v in self.levels)}"
        return text

    def resolve(self, method: str, dataset: str, shots: int,
                data_root: str | None = None) -> BudgetSection:
        """This budget for one group: itself, or the published budget it stands for."""
        if not self.published:
            return self
        spec = published_budget(method, dataset, shots, data_root=data_root)
        full = int(spec.limit or 0)
        levels = tuple(sorted({max(1, round(f * full)) for f in self.limits}))
        return replace(self, unit=spec.unit, batch_size=spec.batch_size,
                       limit=max(1, round(self.fraction * full)), levels=levels)

    def to_budget_spec(self) -> BudgetSpec:
        """The ``BudgetSpec`` the oracle enforces."""
        if self.limit < 1:
            raise ConfigError("a published budget must be resolved for a data set and shots "
                              "(SweepSpec.budget_for) before it is enforced")
        return BudgetSpec(unit=self.unit, limit=self.limit, batch_size=self.batch_size)


@dataclass(frozen=True, kw_only=True)
class SearchSection:
    """``[search]``: which methods, and how Optuna (through Ray Tune) searches their spaces."""

    #: registered method names (``methods.REGISTRY``), in the order they are swept.
    methods: tuple[str, ...] = ()
    #: hyperparameter settings drawn per method, data set and shots (>= 1).
    samples: int = 1
    #: seed of the Optuna sampler (never time-based), in [0, 2**32).
    seed: int = 0
    #: "tpe" (Optuna's TPESampler) or "random" (RandomSampler).
    sampler: str = "tpe"
    #: "none", or "asha" to stop poor trials early on the query count.
    scheduler: str = "none"
    #: the validation metric that selects settings: "val_acc" (max) or "val_loss" (min).
    metric: str = "val_acc"
    #: ASHA's grace period as a fraction of the budget, in (0, 1].
    grace_fraction: float = 0.125
    #: ASHA's reduction factor (>= 2): the share of trials kept at each rung is 1 / it.
    reduction_factor: int = 3

    @property
    def mode(self) -> str:
        """"max" or "min": the direction of ``metric``."""
        return METRICS[self.metric]


@dataclass(frozen=True, kw_only=True)
class ResourcesSection:
    """``[resources]``: concurrency and the oracle actors that hold the models."""

    #: trials running at once (Ray Tune's max_concurrent_trials), >= 1.
    concurrency: int = 1
    #: oracle actors, each holding one model resident on its device, >= 1.
    actors: int = 1
    #: GPUs per oracle actor (fractions share a GPU), >= 0; left out: 1 for any model but the
    #: embedded one, 0 for the embedded one (``SweepSpec.actor_gpus``). A request no node can
    #: hold, on a Ray no autoscaler serves, fails before any actor starts
    #: (``sweep.tuning.placement``); a cluster with too few GPUs in all waits
    #: ``placement_timeout_s``.
    gpus_per_actor: float | None = None
    #: CPUs per oracle actor, >= 0; 0 lets trials use every CPU of a small machine
    #: (trials and actors that each hold 1 of 2 CPUs wait for each other forever).
    cpus_per_actor: float = 0.0
    #: GiB each oracle actor may keep on its device (image features, patch embeddings),
    #: > 0; None: 40% of a GPU's memory, 2 GiB on a CPU.
    cache_gb: float | None = None
    #: oracle actors that serve one task (data set, shots, seed), in [1, actors]; None: all.
    #: Fewer keep each actor's caches to fewer tasks when a sweep has many.
    actors_per_task: int | None = None
    #: milliseconds a request may wait at its actor for others of the same task to merge with
    #: into one forward while nothing else is queued, >= 0 (``sweep.oracle.merging``; about a
    #: forward's time, 1 ms on a GPU); 0: no merging, bit-for-bit repeatable tables (merged
    #: batches agree with separate requests to float rounding).
    merge_wait_ms: float = 0.0
    #: seconds the launch waits for every oracle actor to start (placed on a node with the
    #: GPUs it asks for, its model loaded) before it fails with one line, and a request waits
    #: for an actor whose node was lost to serve again, > 0; an autoscaling cluster's GPU
    #: nodes take minutes to come.
    placement_timeout_s: float = 900.0
    #: how often a trial whose process is lost (its node gone, the process killed) is
    #: started again, from its last budget checkpoint, >= 0.
    trial_restarts: int = 3

    @property
    def cache_bytes(self) -> int | None:
        return None if self.cache_gb is None else int(self.cache_gb * 2**30)


@dataclass(frozen=True, kw_only=True)
class MethodSection:
    """``[methods.<name>]``: one method's fixed hyperparameters, space overrides and budget."""

    #: the registered method name (the table's key).
    name: str
    #: hyperparameters fixed for every trial (config field -> value), checked by the config.
    params: dict[str, Any] = field(default_factory=dict)
    #: the search space: the method's default space with ``params`` fixed and the
    #: section's ``space`` overrides ({low, high, log, step} | {choices} | {value} per
    #: field) applied; built and checked once, by the parser.
    space: MethodSpace
    #: settings drawn for this method, replacing ``search.samples``; None: that one.
    samples: int | None = None
    #: this method's budget, e.g. a published one in its own unit; None: the sweep's.
    budget: BudgetSection | None = None
    #: this method's shot counts, replacing ``data.shots`` (e.g. a low-shot study of a
    #: few methods); None: those.
    shots: tuple[int, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class TargetsSection:
    """``[targets]``: the published test accuracies a sweep sets out to reproduce
    (``sweeps/reproduce/``); ``python -m sweep.report RESULTS --targets SPEC`` sets each
    method's result beside its target."""

    #: where the numbers come from (paper, table, repository and file).
    source: str
    #: the shot count the numbers are for.
    shots: int = 16
    #: (method, data set) -> the published test accuracy, in percent; in TOML one table per
    #: method, ``[targets.<method>]`` with ``<data set> = <accuracy>``.
    accuracy: dict[tuple[str, str], float] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class TrackingSection:
    """``[tracking]``: the experiment trackers each seed's run is logged to, besides the tables
    (``sweep.tracking``); off by default. Each seed's run is one tracker run, grouped by its
    setting (``sample_id``)."""

    #: the trackers, any of "mlflow", "tensorboard" and "wandb" (``TRACKERS``); () (the
    #: default): none. One not installed is refused, naming the package to install.
    trackers: tuple[str, ...] = ()
    #: the W&B project and the MLflow experiment; None: the sweep's name.
    project: str | None = None
    #: the folder the trackers write in (W&B's offline runs, TensorBoard's event files, the
    #: default MLflow store), absolute or relative to the specification's folder; None:
    #: ``tracking/`` in the sweep's results folder.
    folder: str | None = None
    #: MLflow's tracking URI (a server's, or a database's); None: ``sqlite:///`` a file
    #: ``mlflow.db`` in ``folder`` (recent MLflow refuses a plain folder as its store).
    mlflow_uri: str | None = None
    #: "offline" (runs written in ``folder``, uploaded later by ``wandb sync``) or "online"
    #: (uploaded as they are logged: needs ``wandb login`` on the driver's node).
    wandb_mode: str = "offline"
    #: the W&B entity (a user or a team); None: the logged-in account's default.
    wandb_entity: str | None = None


@dataclass(frozen=True, kw_only=True)
class SweepSpec:
    """A whole sweep, as read from a TOML file (``load_spec``) and fully checked.

    Example:
        >>> from sweep.spec import load_spec
        >>> spec = load_spec(None)
        >>> spec.name, spec.search.methods, spec.budget.limit
        ('default', ('bpt-vlm', 'cbbt', 'bbt'), 600)
        >>> spec.budget_for("cbbt").unit, spec.method("cbbt").params
        ('candidate_evals', {'q': 16})
    """

    #: results go to results/<name>/ (one path component: letters, digits, ".", "_", "-").
    name: str
    #: free text, shown at the top of the report.
    description: str = ""
    #: ``plugins = [...]``: modules or ``.py`` files (relative to the specification) that
    #: declare methods of the user's own (``sweep.spec.plugins``), with the installed
    #: packages' entry points of the methods this sweep names.
    plugins: tuple[Plugin, ...] = ()
    #: where the specification came from (a path, or EMBEDDED_SOURCE); not a TOML key.
    source: str = EMBEDDED_SOURCE
    #: the CLIP.
    model: ModelSpec = field(default_factory=ModelSpec)
    #: data sets, data root, shots and seeds.
    data: DataSection = field(default_factory=DataSection)
    #: the sweep's budget and checkpoints.
    budget: BudgetSection = field(default_factory=BudgetSection)
    #: methods, samples, sampler, scheduler and selection metric.
    search: SearchSection = field(default_factory=SearchSection)
    #: concurrency and oracle actors.
    resources: ResourcesSection = field(default_factory=ResourcesSection)
    #: one section per method of ``search.methods``, in the same order.
    methods: tuple[MethodSection, ...] = ()
    #: published accuracies to compare with (None: none).
    targets: TargetsSection | None = None
    #: experiment trackers (none unless the section names some).
    tracking: TrackingSection = field(default_factory=TrackingSection)

    @property
    def actor_gpus(self) -> float:
        """GPUs each oracle actor asks for: ``[resources] gpus_per_actor`` when given, else one
        for any model but the embedded one (a real CLIP on a CPU is 10-100x slower) and none
        for the embedded one, which is made for CPUs.

        The rule reads the specification alone, not the cluster: an autoscaling cluster's GPU
        nodes are started on demand, so at launch it may show none (``clusters/gpu.yaml``).
        """
        explicit = self.resources.gpus_per_actor
        if explicit is not None:
            return explicit
        return 0.0 if self.model.name == EMBEDDED_MODEL else 1.0

    @property
    def actor_gpus_source(self) -> str:
        """Where ``actor_gpus`` comes from, in words for the plan and the launch line."""
        if self.resources.gpus_per_actor is not None:
            return "[resources] gpus_per_actor"
        which = ("the embedded model" if self.model.name == EMBEDDED_MODEL
                 else "a model other than the embedded one")
        return f"the default for {which}: [resources] gpus_per_actor left out"

    def method(self, name: str) -> MethodSection:
        """The section of method ``name``.

        Raises:
            ConfigError: ``name`` is not a method of this sweep.
        """
        for section in self.methods:
            if section.name == name:
                return section
        raise ConfigError(f"{name!r} is not a method of sweep {self.name!r}; "
                          f"its methods: {', '.join(self.search.methods)}")

    def budget_for(self, method: str, dataset: str | None = None,
                   shots: int | None = None) -> BudgetSection:
        """The budget trials of ``method`` run to: its own, or the sweep's; a published one
        resolved for ``dataset`` and ``shots`` (without them, left unresolved).

        Raises:
            ConfigError: a published budget whose rule needs the data root to count classes.
        """
        section = self.method(method).budget or self.budget
        if dataset is None or shots is None:
            return section
        return section.resolve(method, dataset, shots, self.data.root)

    def shots_for(self, method: str) -> tuple[int, ...]:
        """The shot counts ``method`` runs at: its own, else ``data.shots``."""
        own = self.method(method).shots
        return self.data.shots if own is None else own

    @property
    def all_shots(self) -> tuple[int, ...]:
        """Every shot count some method of the sweep runs at, in increasing order."""
        return tuple(sorted({k for m in self.search.methods for k in self.shots_for(m)}
                            | set(self.data.shots)))

    def samples_for(self, method: str) -> int:
        """Settings to draw for ``method``: 1 when its space samples nothing."""
        section = self.method(method)
        if section.space.samples_nothing:
            return 1
        return section.samples if section.samples is not None else self.search.samples

    def results_dir(self, root: str | Path = "results") -> Path:
        """Where this sweep writes: ``<root>/<name>``."""
        return Path(root) / self.name

