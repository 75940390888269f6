"""What a sweep still has to run: one group per (method, data set, shots), resolved once.

``plan_sweep`` reads the results folder once (an interrupted sweep's
complete trials are kept) and gives each group everything its Tune run
needs: the method's search space and budget, the seeds, and how many
settings remain. A setting that lost some of its seeds becomes a repair
group that reruns just those seeds with the setting's parameters.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweep.errors import ConfigError
from sweep.results import ScanResult, read_sweep
from sweep.spec import BudgetSection, MethodSpace, SweepSpec, param_columns

__all__ = ["Group", "SweepPlan", "plan_sweep"]


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
    offset: int  # settings already complete (from an earlier, interrupted run)
    #: a repair: the setting ``sample_id`` with ``params`` lost some seeds; rerun just those.
    sample_id: str | None = None
    params: dict[str, Any] | None = None

    @property
    def tag(self) -> str:
        return f"{self.method}-{self.dataset}-{self.shots}shot"


@dataclass
class SweepPlan:
    spec: SweepSpec
    results_dir: Path
    groups: list[Group] = field(default_factory=list)
    #: what the results folder held when the plan was made (None: no folder yet).
    state: ScanResult | None = None

    @property
    def trials(self) -> int:
        """Result rows still to come (settings x seeds)."""
        return sum(g.samples * len(g.seeds) for g in self.groups)

    @property
    def param_types(self) -> dict[str, str]:
        """The trials table's hyperparameter columns: the union over the sweep's methods."""
        return param_columns(self.spec.method(m).space for m in self.spec.search.methods)

    def describe(self) -> str:
        lines = [f"sweep {self.spec.name!r} -> {self.results_dir}"]
        for g in self.groups:
            if g.sample_id:
                lines.append(f"  {g.sample_id}: rerun seeds {', '.join(map(str, g.seeds))}")
                continue
            done = f" ({g.offset} done)" if g.offset else ""
            lines.append(f"  {g.tag}: {g.samples} settings{done} x {len(g.seeds)} seeds, "
                         f"budget {g.budget.limit:,} {g.budget.unit}, {g.budget.checkpoints} "
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
    if results_dir.exists():
        contents = read_sweep(results_dir)
        plan.state = contents.scan
        if contents.scan.complete and not resume:
            raise ConfigError(
                f"{results_dir} already holds {len(contents.scan.complete)} trials; "
                "pass --resume to complete it, or give the sweep another name")
        for (m, d, s), rows in contents.trials.groupby(["method", "dataset", "shots"]):
            done[(m, d, int(s))] = rows["sample_id"].nunique()
            section = spec.method(m)
            for sample_id, seeds in rows.groupby("sample_id"):
                missing = tuple(x for x in spec.data.seeds if x not in set(seeds["seed"]))
                if missing:  # a setting that lost seeds: rerun those with its parameters
                    params = json.loads(seeds["config_json"].iloc[0]).get("params", {})
                    plan.groups.append(Group(m, d, int(s), section.space, spec.budget_for(m),
                                             missing, 1, 0, sample_id, params))
    for dataset in spec.data.datasets:
        for shots in spec.data.shots:
            for method in spec.search.methods:
                have = done.get((method, dataset, shots), 0)
                todo = spec.samples_for(method) - have
                if todo > 0:
                    plan.groups.append(Group(method, dataset, shots, spec.method(method).space,
                                             spec.budget_for(method), spec.data.seeds, todo, have))
    return plan
