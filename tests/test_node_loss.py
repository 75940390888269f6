"""A GPU node lost mid-sweep does not end the sweep (``tests/node_loss.py``, in its own process
with its own three-node Ray cluster): every trial completes, with exact query counts and one
row per seed. Its actors ask for a GPU each by default, the model not being the embedded one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_a_gpu_node_lost_mid_sweep_leaves_every_trial_complete(tmp_path):
    script = Path(__file__).with_name("node_loss.py")
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                          text=True, timeout=420)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["removed"] != report["added"], "the GPU node was not replaced mid-sweep"
    folder = Path(report["folder"])
    trials, curves = pd.read_parquet(folder / "trials"), pd.read_parquet(folder / "curves")
    assert len(trials) == 4 and trials["trial_id"].is_unique  # 2 settings x 2 seeds, once each
    assert (trials["status"] == "completed").all(), trials[["trial_id", "error"]]
    # Exactly what a run never interrupted spends (39 generations of 10 and bbt's 3 dev scores,
    # after 100, 200 and 300; a 40th generation would pass 400): a request resubmitted after
    # the node went is not counted again.
    assert (trials["queries_candidate_evals"] == 393).all()
    assert not curves.duplicated(["trial_id", "checkpoint"]).any()
    last = curves.sort_values("checkpoint").groupby("trial_id").tail(1)
    assert (last["queries_candidate_evals"] == 393).all()
    actors = json.loads((folder / "actors.json").read_text())["actors"]
    assert len(actors) == 2 and all("error" not in a for a in actors)  # both restarted, serving
    # A GPU each, by default for a model other than the embedded one: so both are on the
    # GPU node that came (the head has no GPU), and the launch said so.
    assert [a["node_id"] for a in actors] == [report["added"]] * 2
    assert ("2 oracle actors of 1 GPU each (the default for a model other than the embedded "
            "one: [resources] gpus_per_actor left out)") in done.stdout
