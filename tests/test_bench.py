"""The benchmarks' reference loop computes what the oracle computes (their speed is not tested)."""

from __future__ import annotations

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
