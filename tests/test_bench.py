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
def test_the_gpu_check_runs_end_to_end_on_the_cpu(tmp_path):
    # What `python -m bench.gpu_check` does on a GPU, with the CPU standing in for it.
    from bench import gpu_check

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
