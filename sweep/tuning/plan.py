"""What a sweep still has to run: one group per (method, data set, shots), resolved once.

``plan_sweep`` reads the results folder once (an interrupted sweep's
complete trials are kept) and gives each group everything its Tune run
needs: the method's search space and budget, the seeds, and how many
settings remain. A setting that lost some of its seeds becomes a repair
group that reruns just those seeds with the setting's parameters; a setting
cut short with a budget checkpoint (``sweep.checkpoints``) becomes a repair
group whose trial goes on from that checkpoint.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweep.checkpoints import (
    CHECKPOINTS,
    CheckpointRefused,
    checkpoint_path,
    key_file,
    load_key,
    read_checkpoint,
    refused,
)
from sweep.errors import ConfigError
from sweep.results import SCHEMA_VERSION, ResultsWarning, ScanResult, SweepContents, read_sweep
from sweep.spec import SWEEP_METHODS, BudgetSection, MethodSpace, SweepSpec, param_columns

__all__ = ["Group", "SweepPlan", "group_tag", "plan_sweep", "sample_index"]


def group_tag(method: str, dataset: str, shots: int) -> str:
    """A group's name: its settings' ids start with it, and its Optuna study has it."""
    return f"{method}-{dataset}-{shots}shot"


@dataclass(frozen=True)
class Group:
    """One Tune run: a method on a data set at a shot count."""

    method: str
    dataset: str
    shots: int
    #: the method's search space and budget, from the specification.
    space: MethodSpace
    budget: BudgetSection
    #: the seeds every setting runs.
    seeds: tuple[int, ...]
    samples: int  # settings still to run
    #: the index of the group's next setting: past every setting an earlier run started
    #: (complete, or checkpointed), so that no two settings share an id.
    offset: int
    #: a repair: the setting ``sample_id`` with ``params`` lost some seeds; rerun just those
    #: (or goes on from its checkpoint).
    sample_id: str | None = None
    params: dict[str, Any] | None = None
    #: settings of the group already complete.
    done: int = 0

    #: a repair that goes on from its setting's budget checkpoint.
    resumes: bool = False

    @property
    def tag(self) -> str:
        return group_tag(self.method, self.dataset, self.shots)

    @property
    def per_budget(self) -> bool:
        """Whether each setting runs once per budget level (``[budget] limits``): its method's
        schedule is planned from the budget (``planned_from_budget`` of its config at the
        group's fixed values and defaults). Other methods read the levels off one run."""
        if len(self.budget.levels) < 2:
            return False
        params = dict(self.params) if self.params is not None else dict(self.space.fixed)
        return SWEEP_METHODS.make_config(self.method, params).planned_from_budget

    @property
    def runs(self) -> int:
        """Runs (result rows) a setting makes: one per seed, or per seed and level."""
        return len(self.seeds) * (len(self.budget.levels) if self.per_budget else 1)


@dataclass
class SweepPlan:
    spec: SweepSpec
    results_dir: Path
    groups: list[Group] = field(default_factory=list)
    #: what the results folder held when the plan was made (None: no folder yet).
    state: ScanResult | None = None
    #: checkpoints not to resume (their rows are written, they do not load, or they were
    #: made for another specification): the driver removes them when it resumes.
    stale_checkpoints: list[str] = field(default_factory=list)
    #: the complete trials' tables the plan was made from (None: no folder yet); the
    #: driver rebuilds a resumed sweep's Optuna studies from them.
    contents: SweepContents | None = field(default=None, repr=False)

    @property
    def trials(self) -> int:
        """Result rows still to come (settings x seeds, x levels for a group run per budget)."""
        return sum(g.samples * g.runs for g in self.groups)

    @property
    def param_types(self) -> dict[str, str]:
        """The trials table's hyperparameter columns: the union over the sweep's methods."""
        return param_columns(self.spec.method(m).space for m in self.spec.search.methods)

    def describe(self) -> str:
        spec = self.spec
        gpus = spec.actor_gpus
        lines = [f"sweep {spec.name!r} -> {self.results_dir}",
                 f"  oracle actors: {spec.resources.actors} x "
                 f"{f'{gpus:g} GPU' if gpus else 'CPU'} ({spec.actor_gpus_source})"]
        for g in self.groups:
            if g.sample_id:
                seeds = ", ".join(map(str, g.seeds))
                lines.append(f"  {g.sample_id}: go on from its checkpoint (seeds {seeds})"
                             if g.resumes else f"  {g.sample_id}: rerun seeds {seeds}")
                continue
            done = f" ({g.done} done)" if g.done else ""
            levels = ("" if not g.budget.levels else ": a run per level" if g.per_budget
                      else ": read off one run")
            lines.append(f"  {g.tag}: {g.samples} settings{done} x {len(g.seeds)} seeds, "
                         f"budget {g.budget.label}{levels}, {g.budget.checkpoints} "
                         "checkpoints")
        lines.append(f"  {self.trials} trials to run")
        return "\n".join(lines)


def plan_sweep(spec: SweepSpec, results_root: str | Path = "results", resume: bool = False) -> SweepPlan:
    """What remains to run. Refuses to overwrite a sweep's results unless resuming.

    Raises:
        ConfigError: the folder holds complete trials and ``resume`` is False.
        ResultsError: the folder exists but is not a sweep's results folder.
    """
    results_dir = spec.results_dir(results_root)
    plan = SweepPlan(spec, results_dir)
    done: dict[tuple[str, str, int], int] = {}
    taken: dict[tuple[str, str, int], set[str]] = {}  # sample ids started before
    if results_dir.exists():
        contents = read_sweep(results_dir)
        plan.state, plan.contents = contents.scan, contents
        checkpoints = _checkpoints(results_dir, set(contents.trials["sample_id"])
                                   if len(contents.trials) else set(), plan.stale_checkpoints)
        if (contents.scan.complete or checkpoints) and not resume:
            raise ConfigError(
                f"{results_dir} already holds {len(contents.scan.complete)} trials and "
                f"{len(checkpoints)} checkpoints; pass --resume to complete it, or give the "
                "sweep another name")
        if resume:
            _refuse_older_schemas(results_dir, contents.schema_versions)
        _refuse_other_versions(results_dir, contents.trials)
        for (m, d, s), rows in contents.trials.groupby(["method", "dataset", "shots"]):
            done[(m, d, int(s))] = rows["sample_id"].nunique()
            taken.setdefault((m, d, int(s)), set()).update(rows["sample_id"])
            section = spec.method(m)
            for sample_id, seeds in rows.groupby("sample_id"):
                missing = tuple(x for x in spec.data.seeds if x not in set(seeds["seed"]))
                if missing:  # a setting that lost seeds: rerun those with its parameters
                    params = json.loads(seeds["config_json"].iloc[0]).get("params", {})
                    plan.groups.append(Group(m, d, int(s), section.space,
                                             spec.budget_for(m, d, int(s)),
                                             missing, 1, 0, sample_id, params))
        for sample_id, setting in checkpoints.items():
            group = _checkpoint_group(spec, sample_id, setting)
            if group is None:
                plan.stale_checkpoints.append(sample_id)
            else:  # a setting cut short: it goes on from its checkpoint
                key = (group.method, group.dataset, group.shots)
                done[key] = done.get(key, 0) + 1
                taken.setdefault(key, set()).add(sample_id)
                plan.groups.append(group)
    for dataset in spec.data.datasets:
        for shots in spec.all_shots:
            for method in (m for m in spec.search.methods if shots in spec.shots_for(m)):
                key = (method, dataset, shots)
                have = done.get(key, 0)
                todo = spec.samples_for(method) - have
                if todo > 0:
                    tag = group_tag(method, dataset, shots)
                    first = max([have, *(1 + sample_index(tag, i) for i in taken.get(key, ()))])
                    plan.groups.append(Group(method, dataset, shots, spec.method(method).space,
                                             spec.budget_for(method, dataset, shots),
                                             spec.data.seeds, todo,
                                             first, done=have))
    return plan


def _refuse_older_schemas(results_dir: Path, versions: frozenset[str]) -> None:
    """Raise where trials of ``results_dir`` were written with another results schema: resuming
    would give one folder two schemas (the report reads either; ``results/README.md``)."""
    other = sorted(v or "unknown" for v in versions - {SCHEMA_VERSION})
    if other:
        raise ConfigError(
            f"{results_dir} was written with results schema {', '.join(other)} and this "
            f"promptsweep writes schema {SCHEMA_VERSION}: --resume cannot add to it; run the "
            "sweep under another name (python -m sweep.report still reads it)")


def _refuse_other_versions(results_dir: Path, trials) -> None:
    """Raise where rows of a method were written by another version of it than the registered
    one, or, for a plugin's method, from other source files: resuming would mix two methods
    under one name."""
    if not len(trials):
        return
    # Rows from before methods had versions (schema 2) hold none: they ran version 1.
    written = trials.get("method_version")
    written = (written.fillna(1) if written is not None else 1)
    for method, versions in trials.assign(method_version=written).groupby("method"):
        current = SWEEP_METHODS.version(method) if method in SWEEP_METHODS else None
        other = sorted({int(v) for v in versions["method_version"]} - {current})
        if other:
            raise ConfigError(
                f"{results_dir} holds {method} rows of version {', '.join(map(str, other))}, "
                f"but {method} is now version {current}: --resume would mix the two; give "
                "the sweep another name")
        digest = SWEEP_METHODS.digest(method) if method in SWEEP_METHODS else None
        if "method_digest" in versions and digest is not None and \
                (versions["method_digest"] != digest).any():
            raise ConfigError(
                f"{results_dir} holds {method} rows of other source files than the plugin's "
                "now (their method_digest differs): --resume would mix two versions of it; give "
                "the sweep another name, or raise the method's version")


def sample_index(tag: str, sample_id: str) -> int:
    """The index of a setting in its group, from its id (``tag-NNN``); -1 for another form."""
    head, _, number = sample_id.rpartition("-")
    return int(number) if head == tag and number.isdigit() else -1


def _checkpoints(results_dir: Path, written: set[str], stale: list[str]) -> dict[str, Any]:
    """The settings (``TrialSetting``) of the sweep's checkpoints of settings without rows, by
    sample id, read from their signed headers: nothing is unpickled (``sweep.checkpoints``).
    Checkpoints of settings whose rows were written since go to ``stale``; so do files that
    are refused (not signed with this user's key) or do not read, with one line each."""
    from sweep.tuning.trial import TrialSetting

    folder = results_dir / CHECKPOINTS
    files = sorted(folder.glob("*.pkl")) if folder.is_dir() else []
    key = load_key(key_file()) if files else None
    settings = {}
    for path in files:
        try:
            checkpoint_path(results_dir, path.stem)
        except ValueError as exc:  # no setting's: left alone
            warnings.warn(refused(path, exc), ResultsWarning, stacklevel=2)
            continue
        if path.stem in written:
            stale.append(path.stem)
            continue
        try:
            header, _ = read_checkpoint(path, key)
            settings[path.stem] = TrialSetting.from_dict(header["setting"])
        except (CheckpointRefused, OSError, LookupError, TypeError, ValueError) as exc:
            reason = exc if isinstance(exc, CheckpointRefused) else f"{type(exc).__name__}: {exc}"
            warnings.warn(refused(path, reason), ResultsWarning, stacklevel=2)
            stale.append(path.stem)
    return settings


def _checkpoint_group(spec: SweepSpec, sample_id: str, setting) -> Group | None:
    """The repair group that goes on from the checkpoint of ``setting``; None (with a warning)
    where the specification no longer has its setting's group, budget or seeds."""
    ok = (setting.method in spec.search.methods
          and setting.method_version == SWEEP_METHODS.version(setting.method)
          and setting.dataset in spec.data.datasets
          and setting.shots in spec.shots_for(setting.method) and setting.seeds == spec.data.seeds)
    if ok:
        budget = spec.budget_for(setting.method, setting.dataset, setting.shots)
        ok = (setting.budget == budget.to_budget_spec() and setting.checkpoints == budget.checkpoints
              and setting.levels == budget.levels and setting.data_root == spec.data.root)
    if not ok:
        warnings.warn(f"checkpoint {sample_id} was made for a different specification (its "
                      "method or its version, data set, shots, seeds or budget); its setting is "
                      "not resumed", ResultsWarning, stacklevel=3)
        return None
    return Group(setting.method, setting.dataset, setting.shots, spec.method(setting.method).space,
                 budget, setting.seeds, 1, 0, sample_id, dict(setting.params), resumes=True)
