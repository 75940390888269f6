"""One Tune run for all groups: settings handed out in turn, each group with its own study and brackets."""

from __future__ import annotations

from types import SimpleNamespace

from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import Searcher

from sweep.tuning import GROUP, SAMPLE, GroupedScheduler, GroupedSearcher, SettingSource


class _Recording(Searcher):
    """A searcher that suggests {"x": n} and records what it is told."""

    def __init__(self) -> None:
        super().__init__(metric="val_acc", mode="max")
        self.suggested: list[str] = []
        self.completed: list[str] = []

    def suggest(self, trial_id: str) -> dict:
        self.suggested.append(trial_id)
        return {"x": len(self.suggested)}

    def on_trial_complete(self, trial_id: str, result=None, error=False) -> None:
        self.completed.append(trial_id)


def test_settings_are_handed_out_in_turn_and_results_go_back_to_their_group():
    a, b = _Recording(), _Recording()
    searcher = GroupedSearcher([SettingSource(2, 0, a), SettingSource(1, 5, fixed={"lr": 0.1}),
                                SettingSource(3, 1, b)], "val_acc", "max")
    configs = [searcher.suggest(f"t{i}") for i in range(6)]
    assert [(c[GROUP], c[SAMPLE]) for c in configs] == [(0, 0), (1, 5), (2, 1), (0, 1), (2, 2),
                                                        (2, 3)]
    assert configs[1] == {"lr": 0.1, GROUP: 1, SAMPLE: 5}
    assert searcher.suggest("t6") == Searcher.FINISHED
    for i in range(6):
        searcher.on_trial_complete(f"t{i}", {"val_acc": 0.5})
    # Each study is told only of its own trials: TPE never learns across groups.
    assert a.suggested == a.completed == ["t0", "t3"]
    assert b.suggested == b.completed == ["t2", "t4", "t5"]


def _trial(trial_id: str, group: int):
    return SimpleNamespace(trial_id=trial_id, config={GROUP: group})


def _asha() -> ASHAScheduler:
    scheduler = ASHAScheduler(time_attr="queries", max_t=100, grace_period=10,
                              reduction_factor=2)
    scheduler.set_search_properties("val_acc", "max")
    return scheduler


def _first_rung(scheduler, trials) -> list[str]:
    for trial in trials:
        scheduler.on_trial_add(None, trial)
    return [scheduler.on_trial_result(None, trial, {"queries": 10, "val_acc": acc})
            for trial, acc in zip(trials, (0.9, 0.8, 0.1))]


def test_each_group_has_its_own_asha_brackets():
    trials = [_trial("a1", 0), _trial("a2", 0), _trial("b1", 1)]
    # One bracket for all: the other data set's accuracies stop b1 at the first rung.
    assert _first_rung(_asha(), trials)[2] == TrialScheduler.STOP
    # A bracket per group: b1 is the first of its own rung and goes on.
    grouped = GroupedScheduler([_asha(), _asha()])
    assert _first_rung(grouped, trials) == [TrialScheduler.CONTINUE, TrialScheduler.STOP,
                                            TrialScheduler.CONTINUE]


def test_with_costs_the_group_with_the_most_work_left_goes_first():
    sources = [SettingSource(2, 0, fixed={"x": g}) for g in range(3)]
    searcher = GroupedSearcher(sources, "val_acc", "max", costs=[1.0, 10.0, 5.0])
    order = [searcher.suggest(f"t{i}")[GROUP] for i in range(6)]
    # work left: (2, 20, 10) -> group 1; (2, 10, 10) -> 1 (tie: first); (2, 0, 10) -> 2; ...
    assert order == [1, 1, 2, 2, 0, 0]
    assert searcher.suggest("t6") == Searcher.FINISHED
