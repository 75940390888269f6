"""The benchmarks' reference loop computes what the oracle computes (their speed is not tested)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.oracle import TOLERANCE, run_measurement


@pytest.mark.parametrize("visual, classes", [(False, 3), (True, 3), (False, 100)],
                         ids=["text", "text+visual", "100 classes, features set"])
def test_reference_loop_gives_the_oracles_losses(visual, classes):
    spec = {"visual": visual, "classes": classes, "device": "cpu", "model": "promptsweep-tiny", "threads": 1}
    ours = run_measurement({**spec, "impl": "ours", "pop": 4})
    reference = run_measurement({**spec, "impl": "reference", "pop": 2})
    assert ours["image_features"] == reference["image_features"] == ("set" if classes > 10 else "encoded")
    assert len(ours["losses"]) == 4 and len(reference["losses"]) == 2
    np.testing.assert_allclose(ours["losses"][:2], reference["losses"], atol=TOLERANCE / 10)
    assert len(set(np.round(ours["losses"], 6))) == 4  # the candidates differ


@pytest.mark.slow
def test_the_gpu_check_runs_end_to_end_on_the_cpu(tmp_path, monkeypatch):
    # What `python -m bench.gpu_check` does on a GPU, with the CPU standing in for it; its
    # speed measured at a population of 4, not 30 (bf16 on a CPU is slow: 15 s saved).
    from bench import gpu_check

    monkeypatch.setattr(gpu_check, "POP", 4)

    out = tmp_path / "check.json"
    assert gpu_check.main(["--device", "cpu", "--model", "promptsweep-tiny", "--draws", "2",
                           "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["precisions"]) == {"fp32", "bf16", "fp16"}
    fp32 = result["precisions"]["fp32"]
    # The same weights and inputs on the same device in fp32: the CPU reference itself.
    assert fp32["losses_max_abs_difference"] == {"text_only": 0.0, "text_visual": 0.0}
    assert fp32["zeroth_order"]["finite_difference_relative_error"] == 0.0
    for precision in ("bf16", "fp16"):
        zo = result["precisions"][precision]["zeroth_order"]
        assert abs(zo["cosine_minus_cpu_fp32"]) < 0.02
        for speed in result["precisions"][precision]["speed"].values():
            assert speed["candidates_per_s"] > 0 and speed["peak_memory_mb"] > 0


def test_the_simulated_gpus_answer_like_an_oracle_and_charge_the_cost_model():
    """bench.simulated: deterministic answers that do not depend on how requests are cut
    (merged, split by images), and a cost that grows with the work."""
    from bench.simulated import FORWARD_S, simulated_server
    from sweep.oracle import PromptLayout, TaskKey
    from sweep.oracle.pool import _combine_images
    from sweep.spec import ModelSpec
    from sweep.tuning import DEVICES

    server = simulated_server(DEVICES["a10g"], time_scale=0.0)(ModelSpec(name="ViT-B-32"))
    key, layout = TaskKey("Food101", None, 16, 1), PromptLayout(n_text=4, n_visual=4)
    info = server.info(key, layout)
    rng = np.random.default_rng(0)
    text = rng.normal(0, 0.02, (3, *info["text_shape"])).astype(np.float32)
    visual = rng.normal(0, 0.02, (3, *info["visual_shape"])).astype(np.float32)
    whole = server.evaluate_split(key, layout, "test", text, visual, False)
    one = server.evaluate_split(key, layout, "test", text[1:2], visual[1:2], False)
    np.testing.assert_array_equal(one.losses, whole.losses[1:2])  # a candidate's alone
    size = info["split_sizes"]["test"]
    pieces = [(0, 10_000), (10_000, size)]
    parts = [server.evaluate_split(key, layout, "test", text, visual, False, p) for p in pieces]
    combined = _combine_images(parts, [b - a for a, b in pieces], False)
    np.testing.assert_allclose(combined.losses, whole.losses, rtol=1e-6)
    # The cost model: a floor per forward, then linear in candidates x images with visual prompts.
    seconds = [server.forward_seconds(key, layout, n, images, False)
               for n, images in ((1, 1000), (2, 1000), (1, 2000))]
    assert seconds[0] > FORWARD_S
    assert seconds[1] - FORWARD_S == pytest.approx(2 * (seconds[0] - FORWARD_S), rel=1e-6)
    assert seconds[2] - FORWARD_S == pytest.approx(2 * (seconds[0] - FORWARD_S), rel=0.05)
    assert server.busy_s > 0 and server.requests == 0  # served directly, not through serve()


def test_the_suites_criteria_are_read_off_a_results_table(tmp_path):
    from bench.suite import measure
    from test_report_main import write_suite

    report = measure(write_suite(tmp_path), with_starts=False)
    digits, inverted = report["tasks"]["digits"], report["tasks"]["digits-inverted"]
    assert (digits["zero_shot"], digits["coop"]) == (30.0, 90.0)
    assert digits["methods"]["cbbt"]["test"] == 70.0 and digits["two_best"] == ["cbbt", "bbt"]
    # 70 against 61 +- 1.4 over 2 seeds: more than twice the standard error (1.0) apart
    assert digits["criteria"]["two_best_differ_by_2_se"]
    assert not inverted["criteria"]["two_best_differ_by_2_se"]  # bbt and cbbt tie at 40
    assert digits["criteria"]["zero_shot_at_most_70"] and digits["criteria"]["coop_15_above_zero_shot"]
    assert not digits["criteria"]["winner_rises_5_from_an_eighth"]  # flat curves
    assert report["suite_criteria"]["ranking_changes_between_tasks"]
    assert not digits["criteria"]["every_start_10_below_coop"]  # no starts were scored
    run = report["run"]  # what made the rows (no sweeps/ spec of that name: no command)
    assert run["trials"] > 0 and "wall_min" in run and run["command"] is None
    assert run["method_version"]["cbbt"] and run["restarts"] == 0


def test_cbbts_column_is_read_off_a_sweep_of_it_alone(tmp_path):
    from bench.suite_cbbt import measure
    from test_report_main import write_suite

    run = measure(write_suite(tmp_path))
    assert run["recipe"] == 'views = "cbbt"' and run["seeds"] == [1, 2]
    digits = run["tasks"]["digits"]
    assert digits["test"] == 70.0 and digits["best_checkpoint_on_test"] >= digits["test"]
