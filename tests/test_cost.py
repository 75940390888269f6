"""The cost model behind ``python -m sweep.launch SPEC --plan``: no Ray, no images, no data root."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from sweep.data import Split, few_shot, load_dataset
from sweep.oracle import PromptedCLIP, PromptLayout, load_model
from sweep.spec import ModelSpec
from sweep.tuning import Architecture

SWEEPS = Path(__file__).resolve().parent.parent / "sweeps"


def test_plan_of_coop16_needs_no_data_root_no_ray_and_no_image(tmp_path, capsys, monkeypatch):
    from sweep.launch import main

    def must_not_run(*args, **kwargs):
        raise AssertionError("the plan started Ray or read an image")

    monkeypatch.setattr("sweep.tuning.driver.start_ray", must_not_run)
    monkeypatch.setattr(Split, "load", must_not_run)
    assert not Path("/data/coop").exists()  # the specification's data root is not here
    assert main([str(SWEEPS / "coop16.toml"), "--plan", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(
        ("bpt-vlm-", "cbbt-", "bbt-", "zip-", "blackvip-tokens-"))]
    costs = [r for r in rows if len(r) == 6]  # group, trials, requests, queries, PFLOP, GPU h
    assert len(costs) == 18 and all(float(r[5]) > 0 for r in costs)
    assert "total:" in out and "wall time on 4 GPUs at concurrency 8" in out


def test_the_flop_formulas_match_torchs_count(monkeypatch):
    # nn.MultiheadAttention's fast path hides its projections from the counter: take the slow one.
    monkeypatch.setattr(torch.backends.mha, "get_fastpath_enabled", lambda: False)
    model, arch = load_model(ModelSpec(), "cpu"), Architecture.of(ModelSpec())
    task = few_shot(load_dataset("digits"), 16, 1)
    prompted = PromptedCLIP(model.model, model.tokenizer, task.classnames,
                            PromptLayout(n_text=8, n_visual=5))
    image = torch.randn(1, 3, arch.image_size, arch.image_size)

    def counted(fn) -> int:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops()

    plain = counted(lambda: prompted.image_features(image))
    prompted_image = counted(lambda: prompted.prompted_image_features(
        prompted.patch_embeddings(image), torch.zeros(1, 5, arch.vision_width)))
    text = counted(lambda: prompted.text_features(torch.zeros(1, 8, arch.text_width)))
    # Layer norms and activations are not counted by either; the rest agrees.
    assert plain == pytest.approx(arch.image_flops(0), rel=0.1)
    assert prompted_image == pytest.approx(arch.image_flops(5), rel=0.1)
    # The digits' names are one token each: a suffix of 3 (name, ".", end of text).
    assert text == pytest.approx(arch.text_flops(8, 10, suffix=3), rel=0.1)


def test_the_actors_serve_cbbts_long_chain_of_requests_first_on_coop16():
    """The driver's priorities: each group's requests a trial; CBBT's 257-prompt steps make the
    longest chain of every data set's groups, BPT-VLM's populations the shortest."""
    from sweep.spec import load_spec
    from sweep.tuning import plan_sweep
    from sweep.tuning.driver import _trial_costs

    spec = load_spec(SWEEPS / "coop16.toml", check_paths=False)
    plan = plan_sweep(spec, Path("/nonexistent-results"), resume=False)
    costs = _trial_costs(spec, plan.groups)
    chains: dict[str, dict[str, float]] = {}
    for group, (device_s, chain) in zip(plan.groups, costs):
        assert device_s > 0 and chain >= 1
        chains.setdefault(group.dataset, {})[group.method] = chain
    for dataset, by_method in chains.items():
        assert max(by_method, key=by_method.get) == "cbbt", dataset
        assert min(by_method, key=by_method.get).startswith("bpt-vlm"), dataset
