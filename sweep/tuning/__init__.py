"""The sweep on Ray: the plan, the Ray Tune trials, the driver's callbacks, the checks before any work.

``plan_sweep`` says what remains to run (one group per method, data set and
shots); ``run_sweep`` checks the inputs (``check_inputs``), starts Ray and the
oracle pool, runs one Ray Tune run over all groups (each with its own Optuna
study and scheduler: ``GroupedSearcher``, ``GroupedScheduler``; the studies
are stored in ``results/<sweep>/optuna.db``, ``sweep.tuning.studies``, imported
by the driver only), and writes every finished trial through ``sweep.results``. A trial
(``tune_trainable``) runs all seeds of one setting in lockstep
(``run_setting``, plain Python).
"""

from sweep.tuning.cost import DEVICES, Architecture, plan_cost
from sweep.tuning.driver import ACTOR_REPORT, PASSED_ENV, run_sweep, start_ray
from sweep.tuning.groups import GROUP, SAMPLE, GroupedScheduler, GroupedSearcher, SettingSource
from sweep.tuning.plan import Group, SweepPlan, plan_sweep
from sweep.tuning.preflight import check_inputs
from sweep.tuning.trial import SeedOutcome, TrialSetting, run_setting, tune_trainable

__all__ = [
    "ACTOR_REPORT",
    "DEVICES",
    "GROUP",
    "PASSED_ENV",
    "SAMPLE",
    "Architecture",
    "Group",
    "GroupedScheduler",
    "GroupedSearcher",
    "SeedOutcome",
    "SettingSource",
    "SweepPlan",
    "TrialSetting",
    "check_inputs",
    "plan_cost",
    "plan_sweep",
    "run_setting",
    "run_sweep",
    "start_ray",
    "tune_trainable",
]
