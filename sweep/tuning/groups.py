"""One Ray Tune run for every group of a plan: a searcher and a scheduler that keep the groups apart.

A sweep's groups (method x data set x shots) used to run one Tune run after
another, so each group's last trials left slots idle. Here one run keeps
``concurrency`` trials going over all groups until the plan is done, while
each group keeps what must not mix:

- ``GroupedSearcher`` hands out the groups' settings in turn. Each sampling
  group has its own Optuna study (its own seeded sampler, told only its own
  trials: TPE never learns across data sets or methods); a group whose space
  samples nothing, or a repair of lost seeds, gives its fixed setting.
- ``GroupedScheduler`` gives each group its own scheduler, ASHA's brackets
  on the group's own budget included, so validation accuracies of different
  data sets or methods are never compared.

Each trial's config carries its group (``GROUP``) and its setting's index in
the group (``SAMPLE``): the index makes the trial's ``sample_id``, whatever
order trials happen to start or end in.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

__all__ = ["GROUP", "SAMPLE", "GroupedScheduler", "GroupedSearcher", "SettingSource"]

#: Config keys of a trial's group (its index in the plan) and of its setting in the group.
GROUP, SAMPLE = "__group", "__sample"


class SettingSource:
    """Where one group's settings come from: an Optuna search (``searcher``) or a fixed setting.

    Args:
        samples: settings to hand out.
        offset: settings of the group already complete (their indices are taken).
        searcher: a Ray Tune searcher of this group alone; None: ``fixed`` every time.
        fixed: the setting when there is no searcher.
    """

    def __init__(self, samples: int, offset: int, searcher: Searcher | None = None,
                 fixed: dict[str, Any] | None = None) -> None:
        self.samples, self.offset, self.searcher = samples, offset, searcher
        self.fixed = dict(fixed or {})
        self.issued = 0

    @property
    def remaining(self) -> int:
        return self.samples - self.issued

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """The next setting (None: the searcher waits); its index in the group is
        ``offset + issued - 1``, which a searcher with ``label_trial`` is told."""
        config = self.fixed if self.searcher is None else self.searcher.suggest(trial_id)
        if config is not None:
            self.issued += 1
            label = getattr(self.searcher, "label_trial", None)
            if label is not None:  # a stored study names its trials by setting
                label(trial_id, self.offset + self.issued - 1)
        return config


class GroupedSearcher(Searcher):
    """Every group's settings, until each has handed out its own: in turn (group 0, 1, ...,
    0, 1, ...), or, given each group's ``costs`` (a trial's estimated device time), from the
    group with the most work left (remaining settings x cost), so that the longest trials
    start first and the sweep does not end waiting on one (longest-processing-time first)."""

    def __init__(self, sources: list[SettingSource], metric: str, mode: str,
                 costs: list[float] | None = None) -> None:
        super().__init__(metric=metric, mode=mode)
        self.sources = sources
        self.costs = costs
        self._owner: dict[str, int] = {}
        self._turn = 0

    def _order(self) -> list[int]:
        n = len(self.sources)
        if self.costs is None:
            return [(self._turn + step) % n for step in range(n)]
        return sorted(range(n), key=lambda g: (-self.sources[g].remaining * self.costs[g], g))

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        return True  # each group's searcher was built with the sweep's metric and mode

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        for group in self._order():
            source = self.sources[group]
            if source.remaining <= 0:
                continue
            config = source.suggest(trial_id)
            if config is None:  # that searcher waits for results; try the next group
                continue
            self._owner[trial_id] = group
            self._turn = group + 1
            return {**config, GROUP: group, SAMPLE: source.offset + source.issued - 1}
        if all(s.remaining <= 0 for s in self.sources):
            return Searcher.FINISHED
        return None

    def _searcher(self, trial_id: str) -> Searcher | None:
        group = self._owner.get(trial_id)
        return None if group is None else self.sources[group].searcher

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        searcher = self._searcher(trial_id)
        if searcher is not None:
            searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        searcher = self._searcher(trial_id)
        if searcher is not None:
            searcher.on_trial_complete(trial_id, result, error)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


class GroupedScheduler(FIFOScheduler):
    """Each trial handled by its group's scheduler; trials start first come, first served."""

    def __init__(self, schedulers: list[TrialScheduler]) -> None:
        super().__init__()
        self.schedulers = schedulers

    def _of(self, trial) -> TrialScheduler:
        return self.schedulers[trial.config[GROUP]]

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        for scheduler in self.schedulers:
            scheduler.set_search_properties(metric, mode, **spec)
        return super().set_search_properties(metric, mode, **spec)

    def _delegate(name: str) -> Callable:  # noqa: N805 - builds the methods below
        def forward(self, tune_controller, trial, *args, **kwargs):
            return getattr(self._of(trial), name)(tune_controller, trial, *args, **kwargs)

        forward.__name__ = name
        return forward

    on_trial_add = _delegate("on_trial_add")
    on_trial_error = _delegate("on_trial_error")
    on_trial_result = _delegate("on_trial_result")
    on_trial_complete = _delegate("on_trial_complete")
    on_trial_remove = _delegate("on_trial_remove")
    del _delegate

    def debug_string(self) -> str:
        return "\n".join(f"group {i}: {s.debug_string()}" for i, s in enumerate(self.schedulers))
