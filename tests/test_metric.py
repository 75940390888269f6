"""``[search] metric = "val_loss"``: the validation loss is recorded at every checkpoint and
selects everywhere (Tune, ASHA, the stored studies, the report), on a sweep whose settings
are ordered one way by validation accuracy and the other way by validation loss."""

from __future__ import annotations

import sys

import numpy as np
import optuna
import pandas as pd
import pytest
from ray import cloudpickle

from bench import simulated
from bench.simulated import simulated_server
from methods.base import Evaluation
from sweep.report import write_report
from sweep.report.tables import best_settings
from sweep.results import read_info, study_storage
from sweep.spec import parse_spec
from sweep.tuning import DEVICES, run_sweep

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SPEC = """
name = "by-loss"
description = "BBT's sigma chosen by validation loss"
[data]
datasets = ["Caltech101"]
root = "/nonexistent"
shots = [1]
seeds = [1]
[budget]
limit = 60
checkpoints = 8
[search]
methods = ["bbt"]
samples = 3
metric = "val_loss"
scheduler = "asha"
grace_fraction = 0.5
[methods.bbt]
params = { popsize = 5, intrinsic_dim_text = 20 }
[resources]
gpus_per_actor = 0
"""


class InvertedValidation(simulated_server(DEVICES["a10g"], 0.0)):
    """A simulated GPU whose validation accuracy rises with the validation loss: the setting
    that is best by one is worst by the other."""

    def evaluate_split(self, key, layout, split, *args, **kwargs):
        ev = super().evaluate_split(key, layout, split, *args, **kwargs)
        if split != "val":
            return ev
        return Evaluation(losses=ev.losses, accuracies=np.tanh(ev.losses).astype(np.float32))


def test_a_sweep_selects_by_validation_loss_when_asked(ray_session, tmp_path, monkeypatch):
    from sweep.tuning import driver

    schedulers = []
    build = driver._scheduler
    monkeypatch.setattr(driver, "_scheduler",
                        lambda spec, group: schedulers.append(build(spec, group)) or schedulers[-1])
    cloudpickle.register_pickle_by_value(simulated)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    folder = run_sweep(parse_spec(SPEC, "by-loss.toml", check_paths=False), results_root=tmp_path,
                       progress=False, server=InvertedValidation)
    trials, curves = pd.read_parquet(folder / "trials"), pd.read_parquet(folder / "curves")
    assert curves["val_loss"].notna().all()  # recorded at every checkpoint
    last = curves.sort_values("checkpoint").groupby("trial_id").tail(1).set_index("trial_id")
    final = trials.set_index("trial_id")
    np.testing.assert_allclose(final["final_val_loss"], last.loc[final.index, "val_loss"])
    by_loss = final["final_val_loss"].idxmin()
    assert final["final_val_acc"].idxmax() != by_loss, "the orders agree: the test cannot fail"

    # ASHA judged trials by the loss, lowest first.
    assert [(s._metric, s._mode) for s in schedulers] == [("val_loss", "min")]
    # The stored study minimises the loss each setting reported.
    study = optuna.load_study(study_name="bbt-Caltech101-1shot", storage=study_storage(folder))
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    values = {t.user_attrs["sample_id"]: t.value for t in study.trials
              if t.state == optuna.trial.TrialState.COMPLETE}
    assert values and all(values[s] == pytest.approx(final.set_index("sample_id")
                                                     .loc[s, "final_val_loss"]) for s in values)

    # The report chooses by the loss too, and says so.
    info = read_info(folder)
    assert (info.metric, info.description) == ("val_loss", "BBT's sigma chosen by validation loss")
    chosen = {metric: _full_budget(best_settings(trials, curves, metric=metric))
              for metric in ("val_loss", "val_acc")}
    assert chosen["val_loss"] == [final.loc[by_loss, "sample_id"]] != chosen["val_acc"]
    text = write_report(folder).read_text()
    assert "BBT's sigma chosen by validation loss" in text
    assert "the lowest mean validation loss over seeds is chosen" in text
    assert "- Oracle actors: 1 on 1 node (" in text and "simulated A10G" in text


def _full_budget(best: pd.DataFrame) -> list[str]:
    return best[np.isclose(best["fraction"], 1.0)]["sample_id"].tolist()
