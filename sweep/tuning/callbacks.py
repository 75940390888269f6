"""The driver's side of a Tune run: each finished trial becomes one results row per seed.

``ResultsCallback`` keeps each trial's latest report and, when the trial
ends, writes its seeds' rows (``TrialRecord.from_outcome``), hands each row
written to the experiment trackers of ``[tracking]`` (``sweep.tracking``), and
moves the progress bar. A failed seed's traceback goes to ``results/<sweep>/logs/<trial
id>.log`` and its last lines to the console (trials and actors write nothing
there themselves: Ray keeps their output in its session's logs). A write that
fails, or a seed that failed because an oracle actor could not be set up on
its node (``ActorSetupError``: no trial can run there), stops the whole sweep
(``stop_on_error``); the latter writes no rows, so that ``--resume`` runs its
trials once the node is mended.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tqdm import tqdm

from sweep.checkpoints import remove_checkpoint
from sweep.errors import PromptTuningError
from sweep.oracle import ActorSetupError
from sweep.results import ResultsWriter, TrialOutcome, TrialRecord
from sweep.spec import SWEEP_METHODS, SweepSpec, sample_to_config
from sweep.tracking import Trackers
from sweep.tuning.groups import GROUP
from sweep.tuning.plan import Group
from sweep.tuning.trial import sample_id_of

__all__ = ["LOGS", "ResultsCallback", "keep_log", "stop_on_error", "tune_callback"]

#: The folder of a sweep's failure logs, beside its tables.
LOGS = "logs"
#: Lines of a failure's log shown on the console.
TAIL = 8


def keep_log(sweep_dir: Path, name: str, text: str) -> tuple[Path, str]:
    """Write ``text`` to ``<sweep_dir>/logs/<name>.log``; returns the path and its last lines,
    indented, as the console shows them. A log that cannot be written is said so in place of
    its path (the failure it records matters more)."""
    path = Path(sweep_dir) / LOGS / f"{name}.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    except OSError as exc:
        path = Path(f"<not kept: {exc.strerror or exc}>")
    tail = "\n".join("    " + line for line in text.rstrip().splitlines()[-TAIL:])
    return path, tail


class ResultsCallback:
    """Driver side: keeps each trial's latest report, writes its rows when it ends (and hands
    them to ``trackers``); shows progress.

    A write that fails (disk full, read-only folder), or a seed that failed because an oracle
    actor could not be set up (``ActorSetupError``), is kept in ``error`` and nothing more is
    written: the sweep stops (``stop_on_error``) and ``run_sweep`` raises it.
    """

    def __init__(self, writer: ResultsWriter, spec: SweepSpec, groups: list[Group], bar: tqdm,
                 progress: dict[str, Any], trackers: Trackers | None = None) -> None:
        self.writer, self.spec, self.groups, self.bar = writer, spec, groups, bar
        self.progress, self.trackers = progress, trackers
        self.latest: dict[str, dict[str, Any]] = {}
        self.error: PromptTuningError | None = None

    def on_trial_result(self, trial, result: dict[str, Any]) -> None:
        self.latest[trial.trial_id] = result

    def on_trial_end(self, trial, error: str | None) -> None:
        """Write the rows of ``trial``; ``error``: its whole error where the trial itself
        failed (its last line is the rows' error)."""
        if self.error is not None:
            return
        trace, error = error, (error.strip().splitlines()[-1] if error else error)
        result = self.latest.get(trial.trial_id, {})
        group = self.groups[trial.config[GROUP]]
        # Numbered in the order the group's settings were handed out, after those already
        # done: deterministic ids, whichever trial happens to report first.
        sample_id = sample_id_of(group.tag, group.sample_id, trial.config)
        params = (dict(group.params or {}) if group.sample_id else
                  sample_to_config(group.method, group.space.hyperparameters(trial.config)))
        outcomes = ([TrialOutcome.from_dict(o) for o in result["outcomes"]] if result.get("outcomes")
                    else [TrialOutcome(seed=s) for s in group.seeds])
        fatal = next((o for o in outcomes if o.fatal), None)
        if fatal is not None:  # its node cannot run any trial: stop, and write no row
            path, tail = keep_log(self.writer.sweep_dir, f"{sample_id}-s{fatal.seed}",
                                  fatal.log or fatal.error or "")
            self.bar.write(f"{sample_id}: an oracle actor could not be set up; the last lines "
                           f"of its log ({path}):\n{tail}")
            self.error = ActorSetupError((fatal.error or "an oracle actor could not be set up")
                                         .removeprefix(f"{ActorSetupError.__name__}: "))
            return
        budget, model = group.budget, self.spec.model.label
        version = SWEEP_METHODS.version(group.method)
        digest = SWEEP_METHODS.digest(group.method)  # a plugin's: two versions never mix
        black_box = SWEEP_METHODS.entry(group.method).method_cls.black_box
        if not result.get("outcomes") and group.per_budget:  # no report: every run of it
            outcomes = [TrialOutcome(seed=s, budget=level) for s in group.seeds
                        for level in budget.levels]
        for out in outcomes:
            # A run per level (``[budget] limits``): its own budget, and an id of its own below
            # the full budget, whose run keeps the setting's plain id.
            limit = budget.limit if out.budget is None else out.budget
            level = "" if limit == budget.limit else f"-b{limit}"
            record = TrialRecord.from_outcome(
                out, trial_error=error,
                trial_id=f"{sample_id}-s{out.seed}{level}", sweep=self.spec.name,
                sample_id=sample_id, method=group.method, model=model, dataset=group.dataset,
                shots=group.shots, seed=out.seed, budget_unit=budget.unit, budget=limit,
                budget_run="per-budget" if group.per_budget else "curve", black_box=black_box,
                params=params,
                estimator=params.get("estimator"), method_version=version, method_digest=digest,
                config={"method": group.method, "method_version": version, "params": params,
                        **({"method_digest": digest} if digest else {}),
                        "budget": limit, "unit": budget.unit, "dataset": group.dataset,
                        "shots": group.shots, "seed": out.seed, "model": model,
                        **({"levels": list(budget.levels)} if budget.levels else {})})
            try:
                row = self.writer.write(record)
            except PromptTuningError as exc:  # ResultsError, or a row the schema refuses
                self.error = exc
                return
            if self.trackers is not None:  # [tracking]: the seed's run, as written
                self.trackers.log(record, row)
            if record.status == "failed":
                self._show_failure(record.trial_id, record.error or "",
                                   out.log or (trace if trace != error else "") or "")
            self.progress["queries"] += record.queries[budget.unit]
            last = record.checkpoints[-1] if record.checkpoints else None
            if last is not None and last.val_acc == last.val_acc:  # not nan
                self.progress["best_val"] = max(self.progress["best_val"], last.val_acc)
            self.progress["failed"] += record.status == "failed"
            self.progress["rows"] += 1
            if record.status == "failed" and self.progress["first_error"] is None:
                self.progress["first_error"] = f"{record.trial_id}: {record.error}"
            self.bar.update(1)
        remove_checkpoint(self.writer.sweep_dir, sample_id)  # its rows are written
        self.bar.set_postfix(best_val=f"{self.progress['best_val']:.1%}",
                             queries=f"{self.progress['queries']:,}", failed=self.progress["failed"])

    def _show_failure(self, trial_id: str, error: str, log: str) -> None:
        """Keep a failed seed's log and show its last lines."""
        text = f"{error}\n\n{log}" if log else error
        path, tail = keep_log(self.writer.sweep_dir, trial_id, text)
        self.bar.write(f"{trial_id} failed: {' '.join(error.split())[:300]}\n  last lines "
                       f"of its log ({path}):\n{tail}")


def tune_callback(inner: ResultsCallback):
    """A Ray Tune Callback that forwards to ``inner`` (defined late: importing ray is slow)."""
    from ray import tune

    class _Forward(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            inner.on_trial_result(trial, result)

        def on_trial_complete(self, iteration, trials, trial, **info):
            inner.on_trial_end(trial, None)

        def on_trial_error(self, iteration, trials, trial, **info):
            # The whole error, its traceback included: its last line is the row's error, the
            # rest goes to the seed's log.
            err = trial.get_error()
            inner.on_trial_end(trial, str(err).strip() if err else "trial errored")

    return _Forward()


def stop_on_error(inner: ResultsCallback):
    """A Ray Tune Stopper that stops every trial once ``inner`` could not write."""
    from ray.tune.stopper import Stopper

    class _StopOnError(Stopper):
        def __call__(self, trial_id, result) -> bool:
            return False

        def stop_all(self) -> bool:
            return inner.error is not None

    return _StopOnError()
